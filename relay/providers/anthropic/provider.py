"""An upstream speaking the Anthropic Messages API (``{base_url}/v1/messages``).

``/v1/messages`` goes as it came and its answers and events come back unchanged;
chat completions are translated to Messages and back (``chat``), and so are OpenAI's
Responses API requests (``responses``, through chat completions).
"""

from collections.abc import AsyncIterator
from typing import Any

import orjson

from ...dialects import CHAT, MESSAGES, RESPONSES
from ...dialects.base import StreamEvent, UpstreamReply
from .. import client
from ..base import Call, UpstreamFailure, UpstreamStream, UpstreamStreamError
from ..http import forwarded_for, probe_get, read_json, send, sse_events
from . import responses
from .chat import AnthropicToChat, anthropic_to_chat, chat_to_anthropic
from .usage import tokens_from_anthropic

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider:
    name = "anthropic"
    label = "Anthropic Messages"
    dialects = frozenset({CHAT.name, MESSAGES.name, RESPONSES.name})
    needs_base_url = True
    charges = True
    forwarded_headers: tuple[str, ...] = ("anthropic-beta", "anthropic-version")

    async def answer(self, call: Call) -> UpstreamReply:
        if call.dialect == MESSAGES.name:
            return await self._message(call, call.body)
        if call.dialect == RESPONSES.name:
            request = responses.responses_to_anthropic(call.body)
            return await responses.answer(call, request, lambda body: self._message(call, body))
        # Content Anthropic cannot take is the caller's to fix: the ApiError is
        # answered as a 400 before anything reaches the upstream, and nothing is charged.
        reply = await self._message(call, chat_to_anthropic(call.body, call.body["model"]))
        chat = anthropic_to_chat(reply.body)
        return UpstreamReply(body=chat, upstream_usage=chat.get("usage"), tokens=reply.tokens)

    async def stream(self, call: Call) -> UpstreamStream:
        if call.dialect == MESSAGES.name:
            return await self._events(call, call.body)
        if call.dialect == RESPONSES.name:
            request = responses.responses_to_anthropic(call.body)
            chunks = ChunksFromEvents(await self._events(call, request.body))
            return responses.stream(call, request, chunks)
        return ChunksFromEvents(
            await self._events(call, chat_to_anthropic(call.body, call.body["model"]))
        )

    def probe(self, base_url: str, api_key: str) -> int | None:
        return probe_get(
            f"{base_url}/v1/models", {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}
        )

    # -- the transport ------------------------------------------------------------------

    async def _send(self, call: Call, body: dict[str, Any]) -> client.UpstreamResponse:
        channel = call.channel
        headers = {
            "anthropic-version": ANTHROPIC_VERSION,
            # The caller's anthropic-beta (and anthropic-version, if it sent one) go along.
            **forwarded_for(call.forwarded, self.forwarded_headers),
            "x-api-key": channel.api_key,
            "content-type": "application/json",
        }
        try:
            return await send(channel, f"{channel.base_url}/v1/messages", body, headers)
        except UpstreamFailure as exc:
            # Anthropic's "overloaded" status.
            if exc.upstream_status == 529:
                raise UpstreamFailure(
                    503,
                    "The upstream provider is overloaded.",
                    code="upstream_failed",
                    upstream_status=529,
                ) from None
            raise

    async def _message(self, call: Call, body: dict[str, Any]) -> UpstreamReply:
        data = await read_json(await self._send(call, body))
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        return UpstreamReply(
            body=data, upstream_usage=usage, tokens=tokens_from_anthropic(usage) if usage else None
        )

    async def _events(self, call: Call, body: dict[str, Any]) -> "Events":
        return Events(await self._send(call, {**body, "stream": True}))


def fold_usage(usage: dict[str, Any], event: dict[str, Any]) -> bool:
    """Fold the usage a stream event reports into ``usage`` (cumulative: the newest
    value of each field wins). True when it is the whole request's (``message_delta``
    reports it; ``message_start`` reports the prompt)."""
    kind = event.get("type")
    if kind == "message_start":
        message = event.get("message")
        start = message.get("usage") if isinstance(message, dict) else None
        usage.update(start if isinstance(start, dict) else {})
    elif kind == "message_delta" and isinstance(event.get("usage"), dict):
        usage.update({k: v for k, v in event["usage"].items() if v is not None})
        return True
    return False


class Events:
    """Native Messages stream events (``StreamEvent.raw`` keeps the exact bytes), with
    the usage reported so far: the prompt from ``message_start``, the whole request's
    from ``message_delta`` (cumulative: the newest value of each field wins)."""

    def __init__(self, response: client.UpstreamResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        stopped = complete = False
        usage: dict[str, Any] = {}
        async for raw, data, terminated in sse_events(self._response):
            if not terminated:
                break
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise UpstreamStreamError("The upstream provider sent a malformed event.") from None
            if not isinstance(event, dict):
                continue
            kind = event.get("type")
            if kind == "error":
                raise UpstreamStreamError("The upstream provider reported an error mid-stream.")
            complete = fold_usage(usage, event) or complete
            if kind == "message_stop":
                stopped = True
            yield StreamEvent(
                data=event,
                raw=raw + b"\n\n",
                usage=tokens_from_anthropic(usage) if usage else None,
                usage_final=complete,
            )
        if not stopped:
            raise UpstreamStreamError("The upstream provider's stream ended early.")

    async def aclose(self) -> None:
        self._response.close()


class ChunksFromEvents:
    """A Messages stream seen as chat-completion chunks."""

    def __init__(self, events: Events) -> None:
        self._events = events

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        translator = AnthropicToChat()
        async for event in self._events:
            for chunk in translator.feed(event.data):
                final = "usage" in chunk
                yield StreamEvent(
                    data=chunk,
                    usage=tokens_from_anthropic(translator.usage) if final else None,
                    usage_final=final,
                )

    async def aclose(self) -> None:
        await self._events.aclose()
