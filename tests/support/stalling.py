"""Upstreams that misbehave at the socket level, where a scripted ASGI app cannot."""

import socket
import threading

import orjson


def chunk(content: str) -> bytes:
    """One ``chat.completion.chunk`` as an SSE event."""
    data = {
        "id": "chatcmpl-stall",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(data) + b"\n\n"


class StallingUpstream:
    """Accepts connections, reads the request, sends ``prelude`` (nothing at all,
    headers, or headers and a few events) and then goes silent until the gateway hangs
    up. Counts the connections the gateway opened and the ones it closed."""

    def __init__(self, prelude: bytes = b"") -> None:
        self.prelude = prelude
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.opened = 0
        self.closed = 0
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.opened += 1
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            if self.prelude:
                conn.sendall(self.prelude)
            while conn.recv(65536):
                pass
        except OSError:
            pass
        with self._lock:
            self.closed += 1

    def close(self) -> None:
        self.sock.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()


def sse_headers() -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )


def json_headers() -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{"


def http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"
