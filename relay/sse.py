"""Incremental server-sent-events decoding on bytes.

Events are kept as the exact bytes the upstream sent so that an event the gateway
does not need to change is forwarded byte for byte.
"""

from collections.abc import Iterator

DONE = b"[DONE]"
# The content type of every event stream the relay sends.
EVENT_STREAM = "text/event-stream; charset=utf-8"


class SSEDecoder:
    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """Complete events (without their blank-line terminator) found so far."""
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            if end > start:
                yield buffer[start:end]
            start = end + 2
        self._buffer = buffer[start:]

    def flush(self) -> bytes | None:
        """An unterminated last event, if the stream ended in the middle of one."""
        rest, self._buffer = self._buffer.strip(b"\n"), b""
        return rest or None


def event_data(event: bytes) -> bytes | None:
    """The joined ``data:`` payload of one event, or None for comments and other fields."""
    parts = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    if not parts:
        return None
    return b"\n".join(parts)


def encode(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"
