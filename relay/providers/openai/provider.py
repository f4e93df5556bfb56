"""Any OpenAI-compatible upstream: ``{base_url}/chat/completions``, ``/embeddings``,
``/completions`` and ``/responses``.

Chat completions, embeddings and legacy completions go as they came; ``/v1/messages``
is translated to chat completions and back (``messages``), and so is
``/v1/responses`` unless the channel speaks the Responses API (``responses``).
Streams always ask for the final usage chunk, which is what the request is billed
on. Images, audio, rerank and moderations go to their own paths (``media``).
"""

from collections.abc import AsyncIterator
from typing import Any

from ... import sse
from ...dialects import CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES, RESPONSES
from ...dialects.base import StreamEvent, UpstreamReply
from ...selectors import ChannelInfo
from .. import client
from ..base import Call, UpstreamStream, UpstreamStreamError
from ..http import forwarded_for, json_event, probe_get, read_json, send, sse_events
from . import media, messages, responses
from .usage import reported

# The upstream path of each dialect served as it is.
PATHS = {
    CHAT.name: "/chat/completions",
    EMBEDDINGS.name: "/embeddings",
    COMPLETIONS.name: "/completions",
    RESPONSES.name: "/responses",
}


def with_stream_usage(body: dict[str, Any]) -> dict[str, Any]:
    """A chat request as a stream that ends with its usage."""
    options = body.get("stream_options")
    return {
        **body,
        "stream": True,
        "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True},
    }


class OpenAIProvider:
    name = "openai"
    label = "OpenAI-compatible"
    dialects = frozenset(
        {CHAT.name, MESSAGES.name, EMBEDDINGS.name, RESPONSES.name, COMPLETIONS.name, *media.PATHS}
    )
    needs_base_url = True
    charges = True
    forwarded_headers: tuple[str, ...] = ("openai-beta",)

    async def answer(self, call: Call) -> UpstreamReply:
        if call.dialect in media.PATHS:
            return await media.answer(call, self.media_fetch)
        if call.dialect == MESSAGES.name:
            return await messages.answer(call, lambda body: self.post(call, PATHS[CHAT.name], body))
        if call.dialect == RESPONSES.name and not self.speaks_responses(call.channel):
            return await responses.answer(
                call.body, call.model, lambda body: self.post(call, PATHS[CHAT.name], body)
            )
        return await self.post(call, PATHS[call.dialect], call.body)

    async def stream(self, call: Call) -> UpstreamStream:
        if call.dialect in media.PATHS:
            return await media.stream(call, self.media_open)
        if call.dialect == MESSAGES.name:
            chunks = await self.chat_stream(
                call, with_stream_usage(messages.messages_to_chat(call.body))
            )
            return messages.MessagesFromChat(chunks, call.model)
        if call.dialect == RESPONSES.name:
            if self.speaks_responses(call.channel):
                return await self.events_stream(call, call.body)
            chunks = await self.chat_stream(
                call, with_stream_usage(responses.responses_to_chat(call.body))
            )
            return responses.ResponsesFromChat(chunks, call.body, call.model)
        if call.dialect == COMPLETIONS.name:
            return await self.completions_stream(call, with_stream_usage(call.body))
        return await self.chat_stream(call, with_stream_usage(call.body))

    def speaks_responses(self, channel: ChannelInfo) -> bool:
        """Whether ``/v1/responses`` goes to this channel as it came (otherwise it is
        translated to chat completions)."""
        return channel.responses_api

    def probe(self, base_url: str, api_key: str) -> int | None:
        return probe_get(f"{base_url}/models", {"authorization": f"Bearer {api_key}"})

    # -- the transport (the mock provider answers these itself) -----------------------

    def _headers(self, call: Call, stream: bool) -> dict[str, str]:
        return {
            **forwarded_for(call.forwarded, self.forwarded_headers),
            "authorization": f"Bearer {call.channel.api_key}",
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
        }

    async def post(self, call: Call, path: str, body: dict[str, Any]) -> UpstreamReply:
        channel = call.channel
        response = await send(
            channel, f"{channel.base_url}{path}", body, self._headers(call, False)
        )
        data = await read_json(response)
        usage = data.get("usage")
        if not isinstance(usage, dict):
            usage = None
        return UpstreamReply(body=data, upstream_usage=usage, tokens=reported(data))

    async def media_fetch(self, call: Call, path: str) -> media.Wire:
        return await media.http_fetch(call, path, self.forwarded_headers)

    async def media_open(self, call: Call, path: str) -> UpstreamStream:
        return await media.http_open(call, path, self.forwarded_headers)

    async def chat_stream(self, call: Call, body: dict[str, Any]) -> UpstreamStream:
        channel = call.channel
        response = await send(
            channel, f"{channel.base_url}{PATHS[CHAT.name]}", body, self._headers(call, True)
        )
        return ChunkStream(response)

    async def completions_stream(self, call: Call, body: dict[str, Any]) -> UpstreamStream:
        channel = call.channel
        response = await send(
            channel, f"{channel.base_url}{PATHS[COMPLETIONS.name]}", body, self._headers(call, True)
        )
        return ChunkStream(response)

    async def events_stream(self, call: Call, body: dict[str, Any]) -> UpstreamStream:
        """The Responses API's own stream, from an upstream that speaks it."""
        channel = call.channel
        response = await send(
            channel, f"{channel.base_url}{PATHS[RESPONSES.name]}", body, self._headers(call, True)
        )
        return responses.ResponseEvents(response)


def chunk_event(data: dict[str, Any], raw: bytes | None = None) -> StreamEvent:
    """A ``chat.completion.chunk`` as an event, with the usage it carries."""
    usage = reported(data)
    return StreamEvent(data=data, raw=raw, usage=usage, usage_final=usage is not None)


class ChunkStream:
    """The chunks of an OpenAI-compatible SSE stream, as they arrive."""

    def __init__(self, response: client.UpstreamResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        finished = False
        async for raw, data, terminated in sse_events(self._response):
            if data.strip() == sse.DONE:
                return
            parsed = json_event(data)
            if "error" in parsed and "choices" not in parsed:
                raise UpstreamStreamError("The upstream provider reported an error mid-stream.")
            if not terminated:
                break  # an unfinished last chunk is not passed on
            if any(
                isinstance(c, dict) and c.get("finish_reason") for c in parsed.get("choices") or ()
            ):
                finished = True
            yield chunk_event(parsed, raw + b"\n\n")
        if not finished:
            raise UpstreamStreamError("The upstream provider's stream ended early.")

    async def aclose(self) -> None:
        # Dropping an unfinished response's connection is how the upstream learns the
        # request was cancelled and stops generating.
        self._response.close()
