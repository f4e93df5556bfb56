"""A scripted OpenAI-compatible upstream served over loopback HTTP.

By default it answers like the built-in mock (same generators, so the ``mock`` body
options work here too); a test can queue behaviours for the next requests:

- ``status``/``body``/``message``: answer with that status and body instead;
- ``delay``: seconds before answering (before the stream starts, for a stream);
- ``chunk_delay``: seconds before each streamed chunk;
- ``usage_on_content``: put the stream's usage on the last content chunk;
- ``no_done``: end the stream without ``data: [DONE]``;
- ``break_after``: drop the connection after that many chunks;
- ``error_after``: send an error event after that many chunks and stop;
- ``stall_after``: go silent (until the client leaves) after that many chunks.
"""

import asyncio
import collections
import threading
from typing import Any

import orjson

from relay import mock


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: collections.deque[dict[str, Any]] = collections.deque()
        self.delay = 0.0
        self.streams_finished = 0
        self.streams_cancelled = 0
        self.stream_events = threading.Event()
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.script.clear()
            self.delay = 0.0
            self.streams_finished = 0
            self.streams_cancelled = 0
            self.stream_events.clear()

    def then(self, **behaviour: Any) -> "FakeUpstream":
        """Queue a behaviour for one future request."""
        self.script.append(behaviour)
        return self

    @property
    def calls(self) -> int:
        return len(self.requests)

    async def __call__(self, scope, receive, send) -> None:
        assert scope["type"] == "http"
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        body = orjson.loads(raw) if raw else {}
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        with self._lock:
            self.requests.append({"path": scope["path"], "headers": headers, "json": body})
            behaviour = self.script.popleft() if self.script else {}
        delay = behaviour.get("delay", self.delay)
        if delay:
            await asyncio.sleep(delay)
        status = behaviour.get("status", 200)
        if status < 400 and body.get("stream") and "body" not in behaviour:
            await self._stream(body, behaviour, receive, send)
            return
        if "body" in behaviour:
            payload = behaviour["body"]
        elif status >= 400:
            message = behaviour.get("message", "upstream failure")
            payload = {"error": {"message": message, "type": "server_error"}}
        else:
            payload = mock.completion(body)
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def _stream(self, body, behaviour, receive, send) -> None:
        gone = asyncio.Event()

        async def watch_disconnect():
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch_disconnect())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        chunks = [c async for c in _all_chunks(body)]
        if behaviour.get("usage_on_content"):
            usage_chunk = next((c for c in chunks if c.get("usage")), None)
            if usage_chunk is not None:
                chunks.remove(usage_chunk)
                finishing = [
                    c for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")
                ]
                finishing[-1]["usage"] = usage_chunk["usage"]
        chunk_delay = behaviour.get("chunk_delay", 0)
        try:
            for sent, chunk in enumerate(chunks):
                if sent == behaviour.get("break_after"):
                    raise ConnectionAbortedError("scripted break")
                if sent == behaviour.get("error_after"):
                    error = {"error": {"message": "overloaded", "type": "server_error"}}
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b"data: " + orjson.dumps(error) + b"\n\n",
                        }
                    )
                    await send({"type": "http.response.body", "body": b""})
                    return
                pause = 30.0 if sent == behaviour.get("stall_after") else chunk_delay
                if pause:
                    try:
                        await asyncio.wait_for(gone.wait(), pause)
                    except TimeoutError:
                        pass
                if gone.is_set():
                    self.streams_cancelled += 1
                    return
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"data: " + orjson.dumps(chunk) + b"\n\n",
                        "more_body": True,
                    }
                )
            tail = b"" if behaviour.get("no_done") else b"data: [DONE]\n\n"
            await send({"type": "http.response.body", "body": tail})
            self.streams_finished += 1
        finally:
            watcher.cancel()
            self.stream_events.set()


async def _all_chunks(body):
    """The mock's chunks, without its own delays or scripted failures."""
    clean = {
        **body,
        "mock": {
            k: v for k, v in mock.options(body).items() if k not in ("delay_ms", "fail_after")
        },
    }
    return_chunks = mock.completion_chunks(clean)
    async for chunk in return_chunks:
        yield chunk
