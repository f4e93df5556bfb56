"""The built-in offline upstream: an OpenAI-compatible provider whose transport is
``upstream`` in this process instead of HTTP. It serves every dialect the
OpenAI-compatible provider serves, the same way (``/v1/messages`` translated;
images, audio, rerank and moderations answered by ``media``), and speaks the
Responses API itself (``responses``, which also answers legacy completions); it
keeps no responses, so Tollgate keeps those it serves."""

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from ...dialects import CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES
from ...dialects.base import StreamEvent, UpstreamReply
from ...dialects.responses import TERMINAL
from ...selectors import ChannelInfo
from ..base import Call, UpstreamFailure, UpstreamStream, UpstreamStreamError
from ..http import failure_from_status
from ..openai.media import Wire
from ..openai.provider import PATHS, OpenAIProvider, chunk_event
from ..openai.usage import reported
from . import media, responses, upstream


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
            if opts.get("delay_ms"):
                await asyncio.sleep(opts["delay_ms"] / 1000)
            if path == PATHS[RESPONSES.name]:
                data = responses.response(body)
            elif path == PATHS[COMPLETIONS.name]:
                data = responses.completion(body)
            else:
                assert path == PATHS[CHAT.name]
                data = upstream.completion(body)
        usage = data.get("usage")
        return UpstreamReply(
            body=data,
            upstream_usage=usage if isinstance(usage, dict) else None,
            tokens=reported(data),
        )

    async def chat_stream(self, call: Call, body: dict[str, Any]) -> UpstreamStream:
        _checked(call.channel, body)
        return MockChunks(upstream.completion_chunks(body))

    async def completions_stream(self, call: Call, body: dict[str, Any]) -> UpstreamStream:
        _checked(call.channel, body)
        return MockChunks(responses.completion_chunks(body))

    async def events_stream(self, call: Call, body: dict[str, Any]) -> UpstreamStream:
        _checked(call.channel, body)
        return MockEvents(responses.response_events(body))

    def speaks_responses(self, channel: ChannelInfo) -> bool:
        return True

    async def media_fetch(self, call: Call, path: str) -> Wire:
        try:
            return await media.fetch(call, _checked(call.channel, media.scripted(call.body)))
        except upstream.MockRequestInvalid as exc:
            raise _refused(call.channel, exc) from None

    async def media_open(self, call: Call, path: str) -> UpstreamStream:
        try:
            return media.open_stream(call, _checked(call.channel, media.scripted(call.body)))
        except upstream.MockRequestInvalid as exc:
            raise _refused(call.channel, exc) from None


class MockChunks:
    def __init__(self, chunks: AsyncGenerator[dict[str, Any], None]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        try:
            async for chunk in self._chunks:
                yield chunk_event(chunk)
        except upstream.MockStreamBroken as exc:
            raise UpstreamStreamError(str(exc)) from None

    async def aclose(self) -> None:
        await self._chunks.aclose()


class MockEvents:
    """The mock's Responses API events; the last one carries the usage."""

    def __init__(self, events: AsyncGenerator[dict[str, Any], None]) -> None:
        self._events = events

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        try:
            async for event in self._events:
                usage = None
                if event["type"] in TERMINAL:
                    usage = reported(event["response"])
                yield StreamEvent(data=event, usage=usage, usage_final=usage is not None)
        except upstream.MockStreamBroken as exc:
            raise UpstreamStreamError(str(exc)) from None

    async def aclose(self) -> None:
        await self._events.aclose()
