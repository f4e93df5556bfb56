"""One relayed request, top to bottom.

authenticate -> validate, policy, limits, hold (``relay_authorize``) -> route and call
the upstream, failing over (``call_with_failover``, ``open_with_failover``) ->
answer or stream -> end (usage record, settlement asked for, limits given back).

After authentication a request is a ``RelayRequest``, the one owner of everything
it takes: its rate-limit admission, its hold, an open upstream stream, and its
usage record. It ends exactly once, through ``RelayRequest.end``, which every way
out calls: the answer, a refusal, a failed upstream, an exception anywhere, a
cancellation at any await (the client left, the server is stopping), and, as the
last resort, the end of the task that served it. The ending runs in a task of its
own that nothing cancels and the process waits for at shutdown. A step that takes
something (limit slots, the hold) runs to its end even if the request is cancelled
while waiting for it, and the ending collects what it took and gives it back.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, StreamingHttpResponse

from accounts.selectors import AuthKey
from billing.services import hold_granted
from core import inflight, logs
from core.logs import request_id_from
from core.money import TokenCounts, micro_to_usd
from usage.models import UsageRecord

from . import anthropic, errors, limits, metrics
from .adapters import UpstreamFailure, UpstreamReply, UpstreamStream
from .errors import ApiError
from .normalize import usage_payload
from .providers import adapter_for
from .selectors import ChannelInfo
from .services import (
    EMBEDDINGS,
    MESSAGES,
    Endpoint,
    Outcome,
    Route,
    authenticate_async,
    relay_authorize,
    relay_charges,
    relay_finish,
)
from .streaming import (
    AnthropicAccounting,
    ChatFormat,
    MessagesFromChatFormat,
    MessagesNativeFormat,
    OpenAIAccounting,
    StreamRelay,
    candidates,
    open_with_failover,
)
from .tokens import count_completion, count_messages, count_text
from .validation import RequestParams

logger = logging.getLogger("tollgate.relay")

# Endings still running (records being written); kept referenced until done, and
# waited for when the server shuts down.
_endings: set[asyncio.Task] = set()
# Set when the server starts shutting down: a request cancelled from then on was
# stopped by the server, not by its client.
_shutting_down = False
# The message of the cancellation that the ASGI handler sends a request whose client
# left; a cancellation without it came from the server.
CLIENT_GONE = "client_disconnected"

# What a request knows of its parameters before its body is validated.
_UNVALIDATED = RequestParams(
    model="", stream=False, include_usage=False, max_tokens=None, n=1, user=""
)


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


async def _collected(step: asyncio.Future) -> Any:
    """The result of a step the request stopped waiting for; None if it failed."""
    try:
        return await step
    except (Exception, asyncio.CancelledError):
        return None


class RelayRequest:
    """A request past authentication, and the owner of what it takes (see the module
    docstring). Filled in as the request goes: ``params`` and ``routes`` once
    validated, ``admission`` and ``hold_id`` once taken, ``attempts`` as upstreams
    are tried."""

    __slots__ = (
        "_admitting",
        "_ending",
        "_reserving",
        "admission",
        "attempts",
        "body",
        "calling",
        "client_ip",
        "endpoint",
        "forwarded",
        "hold_amount",
        "hold_id",
        "key",
        "model_requested",
        "params",
        "priced_model",
        "prompt_estimate",
        "request_id",
        "routes",
        "started",
        "stopped_by",
        "trying",
        "upstream",
        "user",
    )

    def __init__(
        self,
        *,
        request_id: str,
        endpoint: Endpoint,
        key: AuthKey,
        client_ip: str | None,
        started: float,
        forwarded: dict[str, str] | None = None,
    ) -> None:
        self.request_id = request_id
        # Headers the caller sent for the provider (``adapters.FORWARDED_HEADERS``).
        self.forwarded = forwarded or {}
        self.endpoint = endpoint
        self.key = key
        self.client_ip = client_ip
        self.started = started
        self.body: dict[str, Any] = {}
        self.params = _UNVALIDATED
        # The model as the caller wrote it (trimmed to be stored), and the model once
        # it is known to be priced (a metrics label).
        self.model_requested = ""
        self.priced_model = ""
        self.user = ""
        self.routes: list[Route] = []
        self.prompt_estimate = 0
        self.admission: limits.Admission | None = None
        self.hold_id: int | None = None
        self.hold_amount = 0
        self.attempts: list[dict[str, Any]] = []
        # The (model, channel) tried last: the prompt went there. ``calling`` is when
        # that call started, while it is under way.
        self.trying: tuple[Route, ChannelInfo] | None = None
        self.calling: float | None = None
        # An upstream stream this request opened and has not closed.
        self.upstream: UpstreamStream | None = None
        self._admitting: asyncio.Future | None = None
        self._reserving: asyncio.Future | None = None
        self._ending: asyncio.Task | None = None
        # Why a cancelled request was stopped, once a cancellation was seen.
        self.stopped_by = ""

    @property
    def rate_headers(self) -> dict[str, str]:
        return self.admission.headers if self.admission is not None else {}

    def attempt_started(self, route: Route, channel: ChannelInfo) -> None:
        self.trying = (route, channel)
        self.calling = time.perf_counter()

    def attempt_ended(self, status: int, error: str = "") -> None:
        """Note how the call under way ended (kept on the usage record)."""
        assert self.trying is not None and self.calling is not None
        route, channel = self.trying
        attempt: dict[str, Any] = {
            "channel": channel.id,
            "model": route.model,
            "status": status,
            "ms": _ms_since(self.calling),
        }
        if error:
            attempt["error"] = error
        self.attempts.append(attempt)
        self.calling = None

    def cancelled(self, exc: BaseException) -> None:
        """Note who stopped the request: its client, or the server."""
        if not self.stopped_by:
            by_client = isinstance(exc, asyncio.CancelledError) and CLIENT_GONE in exc.args
            self.stopped_by = CLIENT_GONE if by_client else "server_shutdown"

    @property
    def cancel_code(self) -> str:
        """Why a request cancelled now was stopped (its client leaving, unless a
        cancellation from the server was seen)."""
        if self.stopped_by:
            return self.stopped_by
        return "server_shutdown" if _shutting_down else CLIENT_GONE

    # -- what the request takes ---------------------------------------------------

    async def take_admission(self, step: "asyncio.Future[limits.Admission | None]") -> None:
        """Wait for the limits' admission; if this request is cancelled meanwhile,
        the admission still completes and the ending gives its slots back."""
        self._admitting = step
        try:
            self.admission = await asyncio.shield(step)
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._admitting = None
            raise
        self._admitting = None

    async def take_hold(self, step: "asyncio.Future[int]", amount: int) -> None:
        """Wait for the hold (the reservation's raw result); if this request is
        cancelled meanwhile, the reservation still completes and the ending releases
        a hold it granted. Raises HoldRefused."""
        self._reserving = step
        self.hold_amount = amount
        try:
            result = await asyncio.shield(step)
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._reserving = None
            raise
        self._reserving = None
        self.hold_id = hold_granted(result)
        inflight.started(self.hold_id)

    # -- the ending -----------------------------------------------------------------

    def end(
        self, outcome: Outcome | None = None, *, error: ApiError | None = None
    ) -> "asyncio.Task[tuple[int | None, int]]":
        """End the request, once: the first call decides how it ended (``outcome``;
        else ``error``, what the client was answered; else it was cancelled), later
        calls return the same ending. The ending runs in its own task, started here
        synchronously, so it is under way even when the caller is being cancelled;
        await it through ``asyncio.shield`` to wait for the usage record."""
        if self._ending is None:
            task = self._ending = asyncio.ensure_future(self._end(outcome, error))
            _endings.add(task)
            task.add_done_callback(self._ended)
        return self._ending

    def end_with(self, task: asyncio.Task | None) -> None:
        """The last resort: end the request (as cancelled, if nothing else ended it)
        when the task serving it is done, however that happened."""
        if task is not None:
            task.add_done_callback(lambda _: self.end())

    def _ended(self, task: asyncio.Task) -> None:
        _endings.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "request %s: its ending failed (%r); its hold, if any, is released when it expires",
                self.request_id,
                task.exception(),
                exc_info=task.exception(),
            )

    async def _end(self, outcome: Outcome | None, error: ApiError | None) -> tuple[int | None, int]:
        # Steps this request stopped waiting for still took what they took.
        if self._admitting is not None:
            self.admission = await _collected(self._admitting)
        if self._reserving is not None:
            result = await _collected(self._reserving)
            if isinstance(result, int) and result > 0:
                self.hold_id = result
        if self.upstream is not None:
            upstream, self.upstream = self.upstream, None
            try:
                await upstream.aclose()
            except Exception:
                logger.warning("closing the upstream stream of %s failed", self.request_id)
        if outcome is None:
            outcome = self._outcome_unanswered(error)
        try:
            return await relay_finish(request=self, outcome=outcome)
        finally:
            if self.hold_id is not None:
                inflight.ended(self.hold_id)

    def _outcome_unanswered(self, error: ApiError | None) -> Outcome:
        """How a request ended that has no outcome of its own: answered with
        ``error``, or cancelled. A cancelled request is charged its prompt if the
        prompt reached an upstream (counted locally), nothing else."""
        route, channel = self.trying if self.trying is not None else (None, None)
        if error is not None:
            # A 4xx refuses the request (before or after its hold: a translation can
            # refuse content); a 5xx is the gateway failing.
            failed = error.status >= 500
            return Outcome(
                status=UsageRecord.Status.FAILED if failed else UsageRecord.Status.REJECTED,
                http_status=error.status,
                error_code=error.code or error.type,
                route=route,
                attempts=self.attempts,
                latency_ms=_ms_since(self.started),
            )
        if self.calling is not None:
            self.attempt_ended(499)  # the call the client did not wait for
        tokens = TokenCounts()
        if self.trying is not None:
            try:
                tokens = TokenCounts(input=count_messages(prompt_messages(self)))
            except Exception:
                logger.exception("the prompt of %s could not be counted", self.request_id)
        return Outcome(
            status=UsageRecord.Status.CANCELLED,
            http_status=499,
            error_code=self.cancel_code,
            route=route,
            channel=channel,
            tokens=tokens,
            estimated=True,
            attempts=self.attempts,
            latency_ms=_ms_since(self.started),
        )


async def endings_done(timeout: float = 35.0) -> None:
    """At server shutdown: requests stopped from now on were stopped by the server;
    wait for the endings still running (usage records being written)."""
    global _shutting_down
    _shutting_down = True
    # An ending may start another (a stream's safety net): wait until none is left.
    deadline = time.monotonic() + timeout
    while _endings and time.monotonic() < deadline:
        await asyncio.wait(set(_endings), timeout=max(0.0, deadline - time.monotonic()))


# -- the request ------------------------------------------------------------------


def request_id_for(supplied: str | None) -> str:
    rid = request_id_from(supplied)
    # Every log line written while this request is served carries its id.
    logs.request_id.set(rid)
    return rid


def method_not_allowed(
    request_id: str, allowed: str, anthropic_shape: bool = False
) -> HttpResponse:
    response = ApiError(
        405,
        f"Use {allowed} for this endpoint.",
        type="invalid_request_error",
        code="method_not_allowed",
    ).response(request_id, anthropic=anthropic_shape)
    response["allow"] = allowed
    return response


async def serve(
    endpoint: Endpoint,
    *,
    method: str,
    raw_key: str | None,
    raw_body: bytes | None,
    client_ip: str | None,
    supplied_request_id: str | None,
    forwarded: dict[str, str] | None = None,
    record_after_response: bool = False,
) -> HttpResponse | StreamingHttpResponse:
    """One relayed request, from what it arrived with; ``raw_body`` is None for a
    body over DATA_UPLOAD_MAX_MEMORY_SIZE (TOLLGATE["MAX_BODY_BYTES"]). The ASGI
    handler calls this directly for POSTs (``relay.asgi``); ``relay.views`` are the
    same endpoints for Django's own handlers.

    ``record_after_response``: the caller's event loop outlives the request (an ASGI
    server's), so a successful answer may be sent before its usage record is
    committed; the record is written by the request's ending meanwhile."""
    started = time.perf_counter()
    request_id = request_id_for(supplied_request_id)
    anthropic_shape = endpoint is MESSAGES
    if method != "POST":
        return method_not_allowed(request_id, "POST", anthropic_shape)
    if raw_body is None:
        limit = settings.TOLLGATE["MAX_BODY_BYTES"]
        return errors.request_too_large(limit).response(request_id, anthropic=anthropic_shape)
    try:
        key = await authenticate_async(raw_key)
    except ApiError as exc:
        metrics.request_refused(endpoint=endpoint.name, model="", error=exc)
        return exc.response(request_id, anthropic=anthropic_shape)
    except (OperationalError, InterfaceError) as exc:
        logger.warning("request %s failed: database unavailable (%s)", request_id, exc)
        unavailable = errors.service_unavailable(request_id)
        metrics.request_refused(endpoint=endpoint.name, model="", error=unavailable)
        return unavailable.response(request_id, anthropic=anthropic_shape)
    request = RelayRequest(
        request_id=request_id,
        endpoint=endpoint,
        key=key,
        client_ip=client_ip,
        started=started,
        forwarded=forwarded,
    )
    request.end_with(asyncio.current_task())
    try:
        await relay_authorize(request, raw_body)
        if request.params.stream:
            return await _stream(request)
        return await _complete(request, record_after_response)
    except asyncio.CancelledError as exc:
        request.cancelled(exc)
        request.end()
        raise
    except ApiError as exc:
        failure = exc
    except (OperationalError, InterfaceError) as exc:
        logger.warning("request %s failed: database unavailable (%s)", request_id, exc)
        failure = errors.service_unavailable(request_id)
    except Exception:
        logger.exception("request %s failed inside the gateway", request_id)
        failure = errors.internal_error(request_id)
    try:
        # A refusal is in the usage log by the time the client reads it.
        await asyncio.shield(request.end(error=failure))
    except Exception:  # noqa: S110 - the ending logs its own failure; the answer stands
        pass
    return _with_headers(failure.response(request_id, anthropic=anthropic_shape), request)


def _with_headers(response, request: RelayRequest):
    response["x-request-id"] = request.request_id
    if request.endpoint is MESSAGES:
        # Where the Anthropic SDK looks for it (``message._request_id``).
        response["request-id"] = request.request_id
    for name, value in request.rate_headers.items():
        response[name] = value
    return response


def _json(payload: Any, request: RelayRequest) -> HttpResponse:
    return _with_headers(
        HttpResponse(orjson.dumps(payload), content_type="application/json"), request
    )


def _is_native(request: RelayRequest, channel: ChannelInfo) -> bool:
    """An Anthropic-shaped request going to an Anthropic channel: no translation."""
    return request.endpoint is MESSAGES and channel.type == "anthropic"


def _upstream_body(request: RelayRequest, route: Route, channel: ChannelInfo) -> dict[str, Any]:
    if request.endpoint is MESSAGES and not _is_native(request, channel):
        body = anthropic.messages_to_chat(request.body)
    else:
        body = dict(request.body)
    body["model"] = channel.upstream_model(route.model)
    return body


def prompt_messages(request: RelayRequest) -> list[Any]:
    if request.endpoint is MESSAGES:
        return anthropic.messages_to_chat(request.body)["messages"]
    return request.body.get("messages") or []


async def _upstream_failed(request: RelayRequest, exc: UpstreamFailure) -> HttpResponse:
    request.trying = None
    await asyncio.shield(
        request.end(
            Outcome(
                status=UsageRecord.Status.UPSTREAM_ERROR,
                http_status=exc.status,
                error_code=exc.code,
                attempts=request.attempts,
                latency_ms=_ms_since(request.started),
            )
        )
    )
    error = exc.client_error or errors.upstream_error(
        exc.status, exc.message, request.request_id, exc.code
    )
    return _with_headers(error.response(anthropic=request.endpoint is MESSAGES), request)


# -- one answer ------------------------------------------------------------------------


async def _call(request: RelayRequest, route: Route, channel: ChannelInfo) -> UpstreamReply:
    adapter = adapter_for(channel)
    body = _upstream_body(request, route, channel)
    fwd = request.forwarded
    if request.endpoint is EMBEDDINGS:
        return await adapter.embeddings(channel, body, fwd)  # type: ignore[union-attr]
    if _is_native(request, channel):
        return await adapter.messages_complete(channel, body, fwd)  # type: ignore[union-attr]
    return await adapter.complete(channel, body, fwd)


async def call_with_failover(request: RelayRequest) -> tuple[UpstreamReply, Route, ChannelInfo]:
    """Try (model, channel) pairs in routing order until one answers."""
    failure: UpstreamFailure | None = None
    for route, channel in candidates(request):
        request.attempt_started(route, channel)
        try:
            reply = await _call(request, route, channel)
        except UpstreamFailure as exc:
            request.attempt_ended(exc.upstream_status or exc.status, exc.code)
            if not exc.retryable:
                raise
            failure = exc
            continue
        request.attempt_ended(200)
        return reply, route, channel
    assert failure is not None
    raise failure


def _estimate(request: RelayRequest, reply: UpstreamReply, native: bool) -> TokenCounts:
    """Tokens of an answer whose upstream reported no usage, counted locally."""
    if request.endpoint is EMBEDDINGS:
        value = request.body.get("input")
        items = [value] if isinstance(value, str) else value or []
        return TokenCounts(
            input=sum(count_text(i) if isinstance(i, str) else 1 for i in items)
            if not (items and isinstance(items[0], list))
            else sum(len(i) for i in items)
        )
    prompt = count_messages(prompt_messages(request))
    if native:
        text = "".join(
            b.get("text", "") for b in reply.body.get("content") or [] if isinstance(b, dict)
        )
        return TokenCounts(input=prompt, output=count_text(text))
    return TokenCounts(input=prompt, output=count_completion(reply.body))


def _render(
    request: RelayRequest,
    route: Route,
    channel: ChannelInfo,
    reply: UpstreamReply,
    tokens: TokenCounts,
    cost: int,
) -> dict[str, Any]:
    if request.endpoint is MESSAGES:
        if _is_native(request, channel):
            body = reply.body
            body["usage"] = {
                **(reply.upstream_usage or anthropic.anthropic_usage(tokens)),
                "cost": micro_to_usd(cost),
            }
            return body
        message = anthropic.chat_to_message(reply.body, route.model, tokens)
        message["usage"]["cost"] = micro_to_usd(cost)
        return message
    reply.body["usage"] = usage_payload(tokens, cost, reply.upstream_usage)
    return reply.body


async def _complete(request: RelayRequest, record_after: bool) -> HttpResponse:
    try:
        reply, route, channel = await call_with_failover(request)
    except UpstreamFailure as exc:
        return await _upstream_failed(request, exc)

    tokens = reply.tokens
    estimated = tokens is None
    if tokens is None:
        tokens = _estimate(request, reply, _is_native(request, channel))
    outcome = Outcome(
        status=UsageRecord.Status.SUCCESS,
        http_status=200,
        route=route,
        channel=channel,
        tokens=tokens,
        estimated=estimated,
        attempts=request.attempts,
        latency_ms=_ms_since(request.started),
    )
    # The cost in the answer is the one the record carries (both from the route's
    # price snapshot); the answer is rendered before the request ends, so an answer
    # that cannot be rendered is not recorded as served.
    _, cost, _ = relay_charges(request, outcome)
    response = _json(_render(request, route, channel, reply, tokens, cost), request)
    ending = request.end(outcome)
    if not (record_after and request.admission is None):
        # The record is committed before the answer goes out. With
        # ``record_after`` only a key with rate limits waits: its record gives its
        # capacity back, so that its next request finds the slot free.
        await asyncio.shield(ending)
    return response


# -- a stream --------------------------------------------------------------------------


def _opener(request: RelayRequest) -> Callable[[Route, ChannelInfo], Awaitable[Any]]:
    async def open_stream(route: Route, channel: ChannelInfo):
        adapter = adapter_for(channel)
        body = _upstream_body(request, route, channel)
        fwd = request.forwarded
        if _is_native(request, channel):
            return await adapter.messages_stream(channel, body, fwd)  # type: ignore[union-attr]
        options = body.get("stream_options")
        body["stream"] = True
        body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
        return await adapter.open_stream(channel, body, fwd)  # type: ignore[union-attr]

    return open_stream


async def _stream(request: RelayRequest) -> HttpResponse | StreamingHttpResponse:
    try:
        route, channel, events, first = await open_with_failover(request, _opener(request))
    except UpstreamFailure as exc:
        return await _upstream_failed(request, exc)
    if _is_native(request, channel):
        accounting: Any = AnthropicAccounting(request.body)
        fmt: Any = MessagesNativeFormat()
    else:
        accounting = OpenAIAccounting(prompt_messages(request))
        fmt = (
            MessagesFromChatFormat(route.model)
            if request.endpoint is MESSAGES
            else ChatFormat(request.params.include_usage)
        )
    relay = StreamRelay(
        request=request,
        route=route,
        channel=channel,
        events=events,
        first=first,
        accounting=accounting,
        fmt=fmt,
    )
    response = StreamingHttpResponse(relay.body(), content_type="text/event-stream; charset=utf-8")
    response["cache-control"] = "no-cache"
    response["x-accel-buffering"] = "no"
    return _with_headers(response, request)
