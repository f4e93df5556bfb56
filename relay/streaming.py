"""``stream: true``: relay SSE chunks as they arrive and bill exactly what was delivered.

The upstream is always asked for usage. Its usage chunk is held back, normalised and
priced, and passed on only if the client asked for it. However the stream ends
(normally, client gone, upstream broken) the usage record is written once, from a
shielded ``finally``: the upstream's usage if it arrived, otherwise the prompt plus
the text actually handed to the client, counted locally and flagged ``estimated``.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from billing.pricing import TokenCounts
from usage.models import UsageRecord

from . import errors, sse
from .adapters import StreamEvent, UpstreamFailure, UpstreamStream, UpstreamStreamError, adapter_for
from .normalize import tokens_from_openai, usage_payload
from .router import MAX_ATTEMPTS, route_order
from .selectors import ChannelInfo
from .services import Grant, Outcome, relay_finish
from .threads import db
from .tokens import count_messages, count_text

logger = logging.getLogger("tollgate.relay")

DONE = sse.encode(sse.DONE)
# Strong references to fire-and-forget finishing tasks until they are done.
_background: set[asyncio.Task] = set()


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def upstream_body(grant: Grant, channel: ChannelInfo) -> dict[str, Any]:
    body = dict(grant.body)
    body["model"] = channel.upstream_model(grant.params.model)
    options = body.get("stream_options")
    body["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    return body


async def open_with_failover(
    grant: Grant, attempts: list[dict[str, Any]]
) -> tuple[ChannelInfo, UpstreamStream, AsyncIterator[StreamEvent], StreamEvent]:
    """Open the stream on the first channel that delivers a first chunk.

    Nothing has reached the client yet, so a failure up to and including the first
    chunk moves on to the next channel."""
    failure: UpstreamFailure | None = None
    for channel in route_order(grant.channels)[:MAX_ATTEMPTS]:
        started = time.perf_counter()
        try:
            stream = await adapter_for(channel).open_stream(channel, upstream_body(grant, channel))
        except UpstreamFailure as exc:
            attempts.append(
                {
                    "channel": channel.id,
                    "status": exc.upstream_status or exc.status,
                    "error": exc.code,
                    "ms": _ms_since(started),
                }
            )
            if not exc.retryable:
                raise
            failure = exc
            continue
        events = aiter(stream)
        try:
            first = await anext(events)
        except (UpstreamStreamError, StopAsyncIteration) as exc:
            await stream.aclose()
            code = exc.code if isinstance(exc, UpstreamStreamError) else "upstream_empty_stream"
            attempts.append(
                {"channel": channel.id, "status": 502, "error": code, "ms": _ms_since(started)}
            )
            failure = UpstreamFailure(
                502, "The upstream provider's stream failed before it began.", code=code
            )
            continue
        except BaseException:
            await asyncio.shield(stream.aclose())
            raise
        attempts.append({"channel": channel.id, "status": 200, "ms": _ms_since(started)})
        return channel, stream, events, first
    assert failure is not None
    raise failure


class StreamRelay:
    def __init__(
        self,
        *,
        grant: Grant,
        channel: ChannelInfo,
        stream: UpstreamStream,
        events: AsyncIterator[StreamEvent],
        first: StreamEvent,
        attempts: list[dict[str, Any]],
        started: float,
    ) -> None:
        self.grant = grant
        self.channel = channel
        self.stream = stream
        self.events = events
        self.first = first
        self.attempts = attempts
        self.started = started
        self.ttft_ms: int | None = None
        self.upstream_usage: dict[str, Any] | None = None
        self.usage_chunk: dict[str, Any] | None = None
        # Text handed to the client, per choice index (each choice is counted on its own).
        self.delivered_text: dict[int, list[str]] = {}
        self.delivered_reasoning: dict[int, list[str]] = {}
        self._finishing = False

    # -- what the client receives ------------------------------------------------

    def _outgoing(self, event: StreamEvent) -> bytes | None:
        data = event.data
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.upstream_usage = usage
            if not data.get("choices"):
                self.usage_chunk = data
                return None
            # Usage riding on a content chunk is read, then moved to the usage chunk.
            data = {**data, "usage": None}
            if not self.grant.params.include_usage:
                del data["usage"]
            return sse.encode(orjson.dumps(data))
        if event.raw is not None:
            return event.raw
        return sse.encode(orjson.dumps(data))

    def _count_delivered(self, event: StreamEvent) -> None:
        for choice in event.data.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            index = choice.get("index")
            if not isinstance(index, int):
                index = 0
            text = self.delivered_text.setdefault(index, [])
            content = delta.get("content")
            if isinstance(content, str):
                text.append(content)
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str):
                self.delivered_reasoning.setdefault(index, []).append(reasoning)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    fn = call["function"]
                    text.append(str(fn.get("name") or "") + str(fn.get("arguments") or ""))

    def _tokens(self) -> tuple[TokenCounts, bool]:
        if self.upstream_usage is not None:
            return tokens_from_openai(self.upstream_usage), False
        return (
            TokenCounts(
                input=count_messages(self.grant.body.get("messages") or []),
                output=sum(count_text("".join(p)) for p in self.delivered_text.values()),
                reasoning=sum(count_text("".join(p)) for p in self.delivered_reasoning.values()),
            ),
            True,
        )

    def _usage_event(self, tokens: TokenCounts) -> bytes:
        template = self.usage_chunk or self.first.data
        chunk: dict[str, Any] = {
            key: template[key]
            for key in ("id", "object", "created", "model", "system_fingerprint")
            if key in template
        }
        chunk["choices"] = []
        chunk["usage"] = usage_payload(tokens, self.grant.price.cost(tokens), self.upstream_usage)
        return sse.encode(orjson.dumps(chunk))

    async def body(self) -> AsyncIterator[bytes]:
        status = UsageRecord.Status.CANCELLED
        error_code = "client_disconnected"
        try:
            event: StreamEvent | None = self.first
            while event is not None:
                out = self._outgoing(event)
                if out is not None:
                    if self.ttft_ms is None:
                        self.ttft_ms = _ms_since(self.started)
                    yield out
                    # Reaching here means the server took the chunk: it was delivered.
                    self._count_delivered(event)
                event = await anext(self.events, None)
            if self.grant.params.include_usage:
                tokens, _ = self._tokens()
                yield self._usage_event(tokens)
            yield DONE
            status, error_code = UsageRecord.Status.SUCCESS, ""
        except UpstreamStreamError as exc:
            status, error_code = UsageRecord.Status.INTERRUPTED, exc.code
            failure = errors.upstream_error(502, exc.message, self.grant.request_id, exc.code)
            yield sse.encode(orjson.dumps(failure.payload()))
        finally:
            await self.finish(status, error_code)

    # -- the bill ----------------------------------------------------------------

    async def finish(self, status: str, error_code: str) -> None:
        """Close the upstream and write the usage record, exactly once."""
        if self._finishing:
            return
        self._finishing = True
        try:
            await asyncio.shield(self.stream.aclose())
        except Exception:
            logger.warning("closing upstream stream failed for %s", self.grant.request_id)
        tokens, estimated = self._tokens()
        outcome = Outcome(
            status=status,
            http_status=200
            if status == UsageRecord.Status.SUCCESS
            else 499
            if status == UsageRecord.Status.CANCELLED
            else 502,
            channel=self.channel,
            error_code=error_code,
            tokens=tokens,
            estimated=estimated,
            attempts=self.attempts,
            latency_ms=_ms_since(self.started),
            ttft_ms=self.ttft_ms,
        )
        await asyncio.shield(db(relay_finish)(grant=self.grant, outcome=outcome))

    def finish_if_never_started(self, _task: asyncio.Task) -> None:
        """Safety net for a response the server never started to send (the client
        left between the view returning and the first byte): bill it as cancelled."""
        if not self._finishing:
            task = asyncio.ensure_future(
                self.finish(UsageRecord.Status.CANCELLED, "client_disconnected")
            )
            _background.add(task)
            task.add_done_callback(_background.discard)
