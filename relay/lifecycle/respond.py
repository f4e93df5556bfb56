"""Step 8: what the client receives. A JSON answer, an error in the dialect's shape,
or a stream, each with the request id and the key's rate-limit headers.

A stream's body (``StreamRelay``) relays the upstream's events as they arrive,
written in the dialect's format, and bills exactly what was delivered. However it
ends (the last event, the client gone, the upstream broken, a failure of the
gateway's own) it ends its request once, from a shielded ``finally``: with the
upstream's usage if it arrived, otherwise the prompt plus what was delivered,
counted locally and flagged ``estimated``.
"""

import asyncio
import logging
from collections.abc import AsyncIterator

import orjson
from django.http import HttpResponse, StreamingHttpResponse

from billing.pricing import Bill
from core import logs
from core.logs import request_id_from
from core.money import Units
from usage.models import UsageRecord

from .. import errors, sse
from ..dialects import Dialect
from ..dialects.base import Accounting, StreamEvent, StreamFormat
from ..errors import ApiError
from ..providers import UpstreamStreamError
from ..selectors import ChannelInfo
from .request import Outcome, RelayRequest, Route, ms_since

logger = logging.getLogger("tollgate.relay")


def request_id_for(supplied: str | None) -> str:
    rid = request_id_from(supplied)
    # Every log line written while this request is served carries its id.
    logs.request_id.set(rid)
    return rid


def method_not_allowed(
    request_id: str, allowed: str, dialect: Dialect | None = None
) -> HttpResponse:
    error = ApiError(
        405,
        f"Use {allowed} for this endpoint.",
        type="invalid_request_error",
        code="method_not_allowed",
    )
    response = dialect.error_response(error, request_id) if dialect else error.response(request_id)
    response["allow"] = allowed
    return response


def with_headers(response, request: RelayRequest):
    response["x-request-id"] = request.request_id
    for name, value in request.dialect.headers(request.request_id).items():
        response[name] = value
    for name, value in request.rate_headers.items():
        response[name] = value
    return response


def content(body: bytes, content_type: str, request: RelayRequest) -> HttpResponse:
    return with_headers(HttpResponse(body, content_type=content_type), request)


def error(failure: ApiError, request: RelayRequest) -> HttpResponse:
    return with_headers(request.dialect.error_response(failure, request.request_id), request)


def stream(body: "StreamRelay") -> StreamingHttpResponse:
    response = StreamingHttpResponse(body.body(), content_type=body.fmt.content_type)
    response["cache-control"] = "no-cache"
    response["x-accel-buffering"] = "no"
    return with_headers(response, body.request)


class StreamBroken(Exception):
    """A stream in a format with no way to say it failed (audio) is broken off: the
    server drops the connection rather than end the response as if it were whole."""


class StreamRelay:
    """The body of a streamed answer. However it ends it ends its request once, with
    what was delivered; the request's ending closes the upstream."""

    def __init__(
        self,
        *,
        request: RelayRequest,
        route: Route,
        channel: ChannelInfo,
        events: AsyncIterator[StreamEvent],
        first: StreamEvent,
    ) -> None:
        self.request = request
        self.route = route
        self.channel = channel
        self.events = events
        self.first = first
        self.accounting: Accounting = request.dialect.accounting(request.body)
        self.fmt: StreamFormat = request.dialect.stream_format(request.params)
        self.ttft_ms: int | None = None
        # The bill the stream's last event carried; its record is charged the same.
        self.bill: Bill | None = None
        self._finishing = False

    async def body(self) -> AsyncIterator[bytes]:
        status = UsageRecord.Status.CANCELLED
        error_code = ""
        broken = False
        request_id = self.request.request_id
        try:
            event: StreamEvent | None = self.first
            while event is not None:
                self.accounting.observe(event)
                out = self.fmt.event(event)
                if out is not None:
                    if self.ttft_ms is None:
                        self.ttft_ms = ms_since(self.request.started)
                    yield out
                    # Reaching here means the server took the bytes: they were delivered.
                    self.accounting.delivered(event.data)
                event = await anext(self.events, None)
            tokens, _ = self.units()
            self.bill = self.route.price.bill(tokens)
            tail = self.fmt.end(tokens, self.bill.pico)
            if tail:
                yield tail
            status = UsageRecord.Status.SUCCESS
        except asyncio.CancelledError as exc:
            self.request.cancelled(exc)
            raise
        except UpstreamStreamError as exc:
            status, error_code = UsageRecord.Status.INTERRUPTED, exc.code
            last = self.fmt.error(errors.upstream_error(502, exc.message, request_id, exc.code))
            if last is None:
                broken = True
            else:
                yield last
        except Exception:
            # A failure of the gateway's own, after the stream began: the client gets
            # a final error event rather than a stream cut off without a word.
            logger.exception("request %s failed inside the gateway mid-stream", request_id)
            status, error_code = UsageRecord.Status.FAILED, "internal_error"
            last = self._error_event(errors.internal_error(request_id))
            if last is None:
                broken = True
            else:
                yield last
        finally:
            await self.finish(status, error_code)
        if broken:
            raise StreamBroken(f"request {request_id}: the upstream broke off mid-stream")

    async def finish(self, status: str, error_code: str) -> None:
        """End the request with what was delivered, exactly once."""
        if self._finishing:
            return
        self._finishing = True
        try:
            tokens, estimated = self.units()
        except Exception:
            logger.exception("the tokens of %s could not be counted", self.request.request_id)
            tokens, estimated = Units(), True
        outcome = Outcome(
            status=status,
            http_status={"success": 200, "cancelled": 499, "failed": 500}.get(status, 502),
            route=self.route,
            channel=self.channel,
            error_code=error_code or (self.request.cancel_code if status == "cancelled" else ""),
            tokens=tokens,
            estimated=estimated,
            attempts=self.request.attempts,
            latency_ms=ms_since(self.request.started),
            ttft_ms=self.ttft_ms,
            bill=self.bill if status == UsageRecord.Status.SUCCESS else None,
            answer=self.accounting.answer if status == UsageRecord.Status.SUCCESS else None,
        )
        try:
            await asyncio.shield(self.request.end(outcome))
        except Exception:
            # Everything was sent: end the stream cleanly rather than break it. The
            # hold is released by the expiry sweep.
            logger.exception("usage of %s could not be recorded", self.request.request_id)

    def units(self) -> tuple[Units, bool]:
        """What the stream is billed for so far: (units, estimated)."""
        tokens, estimated = self.accounting.tokens()
        return self.request.dialect.units(self.request.params, tokens, None), estimated

    def _error_event(self, failure: ApiError) -> bytes | None:
        try:
            return self.fmt.error(failure)
        except Exception:
            return sse.encode(orjson.dumps(failure.payload()))
