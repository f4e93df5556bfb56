"""The floor under the relay's figures: what the ASGI server and the upstream client
cost on this machine before Tollgate does anything.

Two plain ASGI apps, served by the same server in the same shape as Tollgate:

- ``answer``: reads the request and answers the fixed completion itself;
- ``proxy``: forwards the body to the upstream (``BENCH_UPSTREAM``) with a pooled
  aiohttp session, Tollgate's upstream client, and returns what it got.

No authentication, no database, no accounting: the difference between ``proxy`` and
Tollgate is what Tollgate's own work costs.
"""

import os

import aiohttp

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:18080/v1/chat/completions")
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
    async with _session.post(
        UPSTREAM, data=body, headers={"content-type": "application/json"}
    ) as response:
        await _respond(send, await response.read(), response.status)
