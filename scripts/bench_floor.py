"""The floor under the relay's figures: what the ASGI server and the upstream client
cost on this machine before Tollgate does anything.

Two plain ASGI apps, served by the same server in the same shape as Tollgate:

- ``answer``: reads the request and answers the fixed completion itself;
- ``proxy``: forwards the body to the upstream (``BENCH_UPSTREAM``) with a pooled
  aiohttp session, Tollgate's upstream client, and returns what it got; a request to
  ``/stream`` goes to the streaming upstream (``BENCH_STREAM_UPSTREAM``) instead and
  its body is passed on piece by piece as it arrives.

No authentication, no database, no accounting: the difference between ``proxy`` and
Tollgate is what Tollgate's own work costs.
"""

import os

import aiohttp

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:18080/v1/chat/completions")
STREAM_UPSTREAM = os.environ.get(
    "BENCH_STREAM_UPSTREAM", "http://127.0.0.1:18081/v1/chat/completions"
)
ANSWER = os.environ.get("BENCH_ANSWER", "{}").encode()
_JSON = [(b"content-type", b"application/json")]
_session: aiohttp.ClientSession | None = None


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send, body: bytes, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON})
    await send({"type": "http.response.body", "body": body})


async def answer(scope, receive, send):
    if scope["type"] != "http":
        return
    await _body(receive)
    await _respond(send, ANSWER)


async def proxy(scope, receive, send):
    global _session
    if scope["type"] != "http":
        return
    body = await _body(receive)
    if _session is None:
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    streamed = scope["path"] == "/stream"
    async with _session.post(
        STREAM_UPSTREAM if streamed else UPSTREAM,
        data=body,
        headers={"content-type": "application/json"},
    ) as response:
        if not streamed:
            await _respond(send, await response.read(), response.status)
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body"})
