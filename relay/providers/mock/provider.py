"""The built-in offline upstream: an OpenAI-compatible provider whose transport is
``upstream`` in this process instead of HTTP. It serves every dialect the
OpenAI-compatible provider serves, the same way (``/v1/messages`` translated)."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ...dialects import CHAT, EMBEDDINGS
from ...dialects.base import StreamEvent, UpstreamReply
from ...selectors import ChannelInfo
from ..base import Call, UpstreamFailure, UpstreamStream, UpstreamStreamError
from ..http import failure_from_status
from ..openai.provider import PATHS, OpenAIProvider, chunk_event
from ..openai.usage import reported
from . import upstream


def _refused(channel: ChannelInfo, exc: upstream.MockRequestInvalid) -> UpstreamFailure:
    payload = {"error": {"message": str(exc), "type": "invalid_request_error", "param": exc.param}}
    return failure_from_status(400, orjson.dumps(payload), channel)


def _checked(channel: ChannelInfo, body: dict[str, Any]) -> dict[str, Any]:
    """The request's mock options; a scripted failure status, or an option the mock
    refuses, fails the call as that upstream answer would."""
    try:
        opts = upstream.options(body)
    except upstream.MockRequestInvalid as exc:
        raise _refused(channel, exc) from None
    status = opts.get("status")
    if status is not None:
        raise failure_from_status(status, b'{"error": {"message": "mock failure"}}', channel)
    return opts


class MockProvider(OpenAIProvider):
    name = "mock"
    label = "Built-in mock"
    needs_base_url = False
    # It costs nothing: a mock channel needs no cost prices.
    charges = False

    def probe(self, base_url: str, api_key: str) -> int | None:
        return 200

    async def post(self, call: Call, path: str, body: dict[str, Any]) -> UpstreamReply:
        opts = _checked(call.channel, body)
        if path == PATHS[EMBEDDINGS.name]:
            try:
                data = upstream.embeddings(body)
            except upstream.MockRequestInvalid as exc:
                raise _refused(call.channel, exc) from None
        else:
            assert path == PATHS[CHAT.name]
            if opts.get("delay_ms"):
                await asyncio.sleep(opts["delay_ms"] / 1000)
            data = upstream.completion(body)
        return UpstreamReply(body=data, upstream_usage=data.get("usage"), tokens=reported(data))

    async def chat_stream(self, call: Call, body: dict[str, Any]) -> UpstreamStream:
        _checked(call.channel, body)
        return MockChunks(body)


class MockChunks:
    def __init__(self, body: dict[str, Any]) -> None:
        self._chunks = upstream.completion_chunks(body)

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        try:
            async for chunk in self._chunks:
                yield chunk_event(chunk)
        except upstream.MockStreamBroken as exc:
            raise UpstreamStreamError(str(exc)) from None

    async def aclose(self) -> None:
        await self._chunks.aclose()
