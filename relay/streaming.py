"""``stream: true``: relay events as they arrive and bill exactly what was delivered.

Two concerns, kept apart. *Accounting* reads the upstream's own events: its usage
(OpenAI's final usage chunk, Anthropic's cumulative ``message_start`` and
``message_delta`` usage) and the text actually handed to the client. *Formatting*
writes what the client speaks: OpenAI chunks (passed through byte for byte when
unchanged), Anthropic events passed through, or OpenAI chunks translated to
Anthropic events.

However the stream ends (normally, client gone, upstream broken) the usage record
is written once, from a shielded ``finally``: the upstream's usage if it arrived,
otherwise the prompt plus what was delivered, counted locally and flagged
``estimated``.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from core.money import TokenCounts, micro_to_usd
from usage.models import UsageRecord

from . import errors, sse
from .adapters import StreamEvent, UpstreamFailure, UpstreamStream, UpstreamStreamError
from .anthropic import ChatToMessages, event_bytes
from .errors import ApiError
from .normalize import tokens_from_anthropic, tokens_from_openai, usage_payload
from .router import MAX_ATTEMPTS, route_order
from .selectors import ChannelInfo
from .services import Outcome, Route
from .tokens import content_text, count_text

if TYPE_CHECKING:
    from .lifecycle import RelayRequest

logger = logging.getLogger("tollgate.relay")

DONE = sse.encode(sse.DONE)

Opener = Callable[[Route, ChannelInfo], Awaitable[UpstreamStream]]


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def candidates(request: "RelayRequest") -> list[tuple[Route, ChannelInfo]]:
    """(model, channel) pairs in the order they should be tried, bounded."""
    pairs = [(route, ch) for route in request.routes for ch in route_order(route.channels)]
    return pairs[:MAX_ATTEMPTS]


async def open_with_failover(
    request: "RelayRequest", opener: Opener
) -> tuple[Route, ChannelInfo, AsyncIterator[StreamEvent], StreamEvent]:
    """Open the stream on the first channel that delivers a first event.

    Nothing has reached the client yet, so a failure up to and including the first
    event moves on to the next channel. The open stream belongs to the request from
    the moment it is opened (its ending closes it)."""
    failure: UpstreamFailure | None = None
    for route, channel in candidates(request):
        request.attempt_started(route, channel)
        try:
            stream = await opener(route, channel)
        except UpstreamFailure as exc:
            request.attempt_ended(exc.upstream_status or exc.status, exc.code)
            if not exc.retryable:
                raise
            failure = exc
            continue
        request.upstream = stream
        events = aiter(stream)
        try:
            first = await anext(events)
        except (UpstreamStreamError, StopAsyncIteration) as exc:
            request.upstream = None
            await stream.aclose()
            code = exc.code if isinstance(exc, UpstreamStreamError) else "upstream_empty_stream"
            # Silence after the headers is a timeout like silence before them.
            status = 504 if code == "upstream_timeout" else 502
            request.attempt_ended(status, code)
            message = (
                "The upstream provider timed out."
                if status == 504
                else "The upstream provider's stream failed before it began."
            )
            failure = UpstreamFailure(status, message, code=code)
            continue
        request.attempt_ended(200)
        return route, channel, events, first
    assert failure is not None
    raise failure


# -- accounting: what the upstream reported and what the client received ----------------


class OpenAIAccounting:
    """For upstream events that are ``chat.completion.chunk``s."""

    def __init__(self, prompt_messages: list[Any]) -> None:
        self.prompt_messages = prompt_messages
        self.usage: dict[str, Any] | None = None
        # Text handed to the client, per choice index (each choice counted on its own).
        self.text: dict[int, list[str]] = {}
        self.reasoning: dict[int, list[str]] = {}

    def observe(self, data: dict[str, Any]) -> None:
        if isinstance(data.get("usage"), dict):
            self.usage = data["usage"]

    def delivered(self, data: dict[str, Any]) -> None:
        choices = data.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or not isinstance(choice.get("delta"), dict):
                continue
            delta = choice["delta"]
            index = choice.get("index")
            if not isinstance(index, int):
                index = 0
            text = self.text.setdefault(index, [])
            if isinstance(delta.get("content"), str):
                text.append(delta["content"])
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str):
                self.reasoning.setdefault(index, []).append(reasoning)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    fn = call["function"]
                    text.append(str(fn.get("name") or "") + str(fn.get("arguments") or ""))

    def tokens(self) -> tuple[TokenCounts, bool]:
        if self.usage is not None:
            return tokens_from_openai(self.usage), False
        from .tokens import count_messages

        return (
            TokenCounts(
                input=count_messages(self.prompt_messages),
                output=sum(count_text("".join(p)) for p in self.text.values()),
                reasoning=sum(count_text("".join(p)) for p in self.reasoning.values()),
            ),
            True,
        )


class AnthropicAccounting:
    """For native Anthropic events: usage is cumulative, the newest values win."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.usage: dict[str, Any] = {}
        self.final = False
        self.text: list[str] = []
        self.thinking: list[str] = []

    def observe(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            self.usage.update(usage if isinstance(usage, dict) else {})
        elif kind == "message_delta" and isinstance(data.get("usage"), dict):
            self.usage.update({k: v for k, v in data["usage"].items() if v is not None})
            self.final = True

    def delivered(self, data: dict[str, Any]) -> None:
        delta = data.get("delta")
        if data.get("type") != "content_block_delta" or not isinstance(delta, dict):
            return
        if delta.get("type") == "text_delta":
            self.text.append(str(delta.get("text", "")))
        elif delta.get("type") == "input_json_delta":
            self.text.append(str(delta.get("partial_json", "")))
        elif delta.get("type") == "thinking_delta":
            self.thinking.append(str(delta.get("thinking", "")))

    def tokens(self) -> tuple[TokenCounts, bool]:
        if self.final:
            return tokens_from_anthropic(self.usage), False
        if "input_tokens" in self.usage:
            prompt = tokens_from_anthropic({**self.usage, "output_tokens": 0})
        else:
            from .tokens import count_messages

            messages = list(self.body.get("messages") or [])
            system = self.body.get("system")
            if system:
                messages.append(
                    {
                        "role": "system",
                        "content": content_text(system) if not isinstance(system, str) else system,
                    }
                )
            prompt = TokenCounts(input=count_messages(messages))
        output = count_text("".join(self.text)) + count_text("".join(self.thinking))
        return TokenCounts(
            input=prompt.input,
            cache_read=prompt.cache_read,
            cache_write=prompt.cache_write,
            output=output,
        ), True


class Accounting(Protocol):
    def observe(self, data: dict[str, Any]) -> None: ...
    def delivered(self, data: dict[str, Any]) -> None: ...
    def tokens(self) -> tuple[TokenCounts, bool]: ...


# -- formatting: what the client speaks ----------------------------------------------------


class ChatFormat:
    """OpenAI chunks to an OpenAI client. The upstream's usage chunk is held back and
    replaced, at the end, by the normalised one if the client asked for usage."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.template: dict[str, Any] | None = None

    def event(self, event: StreamEvent) -> bytes | None:
        data = event.data
        if self.template is None:
            self.template = data
        if isinstance(data.get("usage"), dict):
            if not data.get("choices"):
                self.template = data
                return None
            # Usage riding on a content chunk was read; it moves to the usage chunk.
            data = {**data, "usage": None}
            if not self.include_usage:
                del data["usage"]
            return sse.encode(orjson.dumps(data))
        if event.raw is not None:
            return event.raw
        return sse.encode(orjson.dumps(data))

    def end(self, tokens: TokenCounts, cost: int, upstream_usage: dict[str, Any] | None) -> bytes:
        if not self.include_usage:
            return DONE
        template = self.template or {}
        chunk: dict[str, Any] = {
            key: template[key]
            for key in ("id", "object", "created", "model", "system_fingerprint")
            if key in template
        }
        chunk["choices"] = []
        chunk["usage"] = usage_payload(tokens, cost, upstream_usage)
        return sse.encode(orjson.dumps(chunk)) + DONE

    def error(self, failure: ApiError) -> bytes:
        return sse.encode(orjson.dumps(failure.payload()))


class MessagesNativeFormat:
    """Anthropic events from an Anthropic channel, passed through unchanged."""

    def event(self, event: StreamEvent) -> bytes | None:
        return event.raw if event.raw is not None else event_bytes(event.data)

    def end(self, tokens: TokenCounts, cost: int, upstream_usage: dict[str, Any] | None) -> bytes:
        return b""

    def error(self, failure: ApiError) -> bytes:
        return event_bytes(failure.anthropic_payload())


class MessagesFromChatFormat:
    """OpenAI chunks from another channel, translated to Anthropic events."""

    def __init__(self, model: str) -> None:
        self.translator = ChatToMessages(model)

    def event(self, event: StreamEvent) -> bytes | None:
        return self.translator.feed(event.data) or None

    def end(self, tokens: TokenCounts, cost: int, upstream_usage: dict[str, Any] | None) -> bytes:
        return self.translator.finish(tokens, micro_to_usd(cost))

    def error(self, failure: ApiError) -> bytes:
        return event_bytes(failure.anthropic_payload())


class Format(Protocol):
    def event(self, event: StreamEvent) -> bytes | None: ...
    def end(
        self, tokens: TokenCounts, cost: int, upstream_usage: dict[str, Any] | None
    ) -> bytes: ...
    def error(self, failure: ApiError) -> bytes: ...


class StreamRelay:
    """The body of a streamed answer. However it ends (the last event, the client
    gone, the upstream broken, a failure of the gateway's own) it ends its request
    once, with what was delivered; the request's ending closes the upstream."""

    def __init__(
        self,
        *,
        request: "RelayRequest",
        route: Route,
        channel: ChannelInfo,
        events: AsyncIterator[StreamEvent],
        first: StreamEvent,
        accounting: Accounting,
        fmt: Format,
    ) -> None:
        self.request = request
        self.route = route
        self.channel = channel
        self.events = events
        self.first = first
        self.accounting = accounting
        self.fmt = fmt
        self.ttft_ms: int | None = None
        self._finishing = False

    async def body(self) -> AsyncIterator[bytes]:
        status = UsageRecord.Status.CANCELLED
        error_code = ""
        request_id = self.request.request_id
        try:
            event: StreamEvent | None = self.first
            while event is not None:
                self.accounting.observe(event.data)
                out = self.fmt.event(event)
                if out is not None:
                    if self.ttft_ms is None:
                        self.ttft_ms = _ms_since(self.request.started)
                    yield out
                    # Reaching here means the server took the bytes: they were delivered.
                    self.accounting.delivered(event.data)
                event = await anext(self.events, None)
            tokens, _ = self.accounting.tokens()
            upstream_usage = getattr(self.accounting, "usage", None)
            tail = self.fmt.end(
                tokens,
                self.route.price.cost(tokens),
                upstream_usage if isinstance(self.accounting, OpenAIAccounting) else None,
            )
            if tail:
                yield tail
            status = UsageRecord.Status.SUCCESS
        except asyncio.CancelledError as exc:
            self.request.cancelled(exc)
            raise
        except UpstreamStreamError as exc:
            status, error_code = UsageRecord.Status.INTERRUPTED, exc.code
            yield self.fmt.error(errors.upstream_error(502, exc.message, request_id, exc.code))
        except Exception:
            # A failure of the gateway's own, after the stream began: the client gets
            # a final error event rather than a stream cut off without a word.
            logger.exception("request %s failed inside the gateway mid-stream", request_id)
            status, error_code = UsageRecord.Status.FAILED, "internal_error"
            yield _error_event(self.fmt, errors.internal_error(request_id))
        finally:
            await self.finish(status, error_code)

    async def finish(self, status: str, error_code: str) -> None:
        """End the request with what was delivered, exactly once."""
        if self._finishing:
            return
        self._finishing = True
        try:
            tokens, estimated = self.accounting.tokens()
        except Exception:
            logger.exception("the tokens of %s could not be counted", self.request.request_id)
            tokens, estimated = TokenCounts(), True
        outcome = Outcome(
            status=status,
            http_status={"success": 200, "cancelled": 499, "failed": 500}.get(status, 502),
            route=self.route,
            channel=self.channel,
            error_code=error_code or (self.request.cancel_code if status == "cancelled" else ""),
            tokens=tokens,
            estimated=estimated,
            attempts=self.request.attempts,
            latency_ms=_ms_since(self.request.started),
            ttft_ms=self.ttft_ms,
        )
        try:
            await asyncio.shield(self.request.end(outcome))
        except Exception:
            # Everything was sent: end the stream cleanly rather than break it. The
            # hold is released by the expiry sweep.
            logger.exception("usage of %s could not be recorded", self.request.request_id)


def _error_event(fmt: Format, failure: ApiError) -> bytes:
    try:
        return fmt.error(failure)
    except Exception:
        return sse.encode(orjson.dumps(failure.payload()))
