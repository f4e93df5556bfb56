"""Any OpenAI-compatible upstream: ``{base_url}/chat/completions`` and ``/embeddings``.

Chat completions and embeddings go as they came; ``/v1/messages`` is translated to
chat completions and back (``messages``). Streams always ask for the final usage
chunk, which is what the request is billed on.
"""

from collections.abc import AsyncIterator
from typing import Any

from ... import sse
from ...dialects import CHAT, EMBEDDINGS, MESSAGES
from ...dialects.base import StreamEvent, UpstreamReply
from .. import client
from ..base import Call, UpstreamStream, UpstreamStreamError
from ..http import forwarded_for, json_event, probe_get, read_json, send, sse_events
from . import messages
from .usage import reported

# The upstream path of each dialect served as it is.
PATHS = {CHAT.name: "/chat/completions", EMBEDDINGS.name: "/embeddings"}


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
    dialects = frozenset({CHAT.name, MESSAGES.name, EMBEDDINGS.name})
    needs_base_url = True
    charges = True
    forwarded_headers: tuple[str, ...] = ("openai-beta",)

    async def answer(self, call: Call) -> UpstreamReply:
        if call.dialect == MESSAGES.name:
            return await messages.answer(call, lambda body: self.post(call, PATHS[CHAT.name], body))
        return await self.post(call, PATHS[call.dialect], call.body)

    async def stream(self, call: Call) -> UpstreamStream:
        if call.dialect == MESSAGES.name:
            chunks = await self.chat_stream(
                call, with_stream_usage(messages.messages_to_chat(call.body))
            )
            return messages.MessagesFromChat(chunks, call.model)
        return await self.chat_stream(call, with_stream_usage(call.body))

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

    async def chat_stream(self, call: Call, body: dict[str, Any]) -> UpstreamStream:
        channel = call.channel
        response = await send(
            channel, f"{channel.base_url}{PATHS[CHAT.name]}", body, self._headers(call, True)
        )
        return ChunkStream(response)


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
