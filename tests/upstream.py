"""A scripted OpenAI-compatible upstream served over loopback HTTP.

By default it answers like the built-in mock (same generator); a test can queue
behaviours for the next requests: an HTTP error, a delay, a fixed body.
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
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.script.clear()
            self.delay = 0.0

    def then(self, **behaviour: Any) -> "FakeUpstream":
        """Queue a behaviour for one future request: status=, body=, delay=."""
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
        if "body" in behaviour:
            payload = behaviour["body"]
        elif status >= 400:
            payload = {
                "error": {
                    "message": behaviour.get("message", "upstream failure"),
                    "type": "server_error",
                }
            }
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
