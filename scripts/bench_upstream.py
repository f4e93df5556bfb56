"""A streaming fake upstream for the benchmark: OpenAI-shaped SSE, first chunk at once,
then one chunk every ``BENCH_CHUNK_DELAY_MS``. Plain ASGI, no framework."""

import asyncio
import os

import orjson

CHUNKS = 10
DELAY = float(os.environ.get("BENCH_CHUNK_DELAY_MS", "20")) / 1000


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "bench-stream",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


USAGE = (
    b"data: "
    + orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "bench-stream",
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": CHUNKS, "total_tokens": 9 + CHUNKS},
        }
    )
    + b"\n\n"
)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    await send(
        {
            "type": "http.response.body",
            "body": _chunk({"role": "assistant", "content": ""}),
            "more_body": True,
        }
    )
    for i in range(CHUNKS):
        await send(
            {"type": "http.response.body", "body": _chunk({"content": f" w{i}"}), "more_body": True}
        )
        await asyncio.sleep(DELAY)
    await send(
        {"type": "http.response.body", "body": _chunk({}, "stop") + USAGE + b"data: [DONE]\n\n"}
    )
