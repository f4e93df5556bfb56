"""The ``/v1/*`` endpoints: plain async Django views, no DRF on the hot path."""

import asyncio
import logging
import re
import time
import uuid
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from billing.pricing import TokenCounts
from usage.models import UsageRecord

from . import errors
from .adapters import UpstreamFailure, UpstreamReply, adapter_for
from .errors import ApiError
from .normalize import usage_payload
from .router import MAX_ATTEMPTS, route_order
from .selectors import ChannelInfo
from .services import Grant, Outcome, authenticate, relay_authorize, relay_finish
from .streaming import StreamRelay, open_with_failover
from .threads import db
from .tokens import count_completion, count_messages

logger = logging.getLogger("tollgate.relay")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id_for(request: HttpRequest) -> str:
    supplied = request.headers.get("x-request-id", "")
    if _REQUEST_ID.fullmatch(supplied):
        return supplied
    return f"req_{uuid.uuid4().hex}"


def bearer_key(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def client_ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def _json(payload: Any, request_id: str, status: int = 200) -> HttpResponse:
    response = HttpResponse(orjson.dumps(payload), status=status, content_type="application/json")
    response["x-request-id"] = request_id
    return response


def _method_not_allowed(request_id: str, allowed: str) -> HttpResponse:
    response = ApiError(
        405,
        f"Use {allowed} for this endpoint.",
        type="invalid_request_error",
        code="method_not_allowed",
    ).response(request_id)
    response["allow"] = allowed
    return response


def _internal_error(request_id: str) -> HttpResponse:
    return ApiError(
        500,
        f"The gateway could not complete the request (request id: {request_id}).",
        type="api_error",
        code="internal_error",
    ).response(request_id)


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


async def call_with_failover(
    grant: Grant, attempts: list[dict[str, Any]]
) -> tuple[UpstreamReply, ChannelInfo]:
    """Try channels in routing order until one answers; retryable failures move on."""
    failure: UpstreamFailure | None = None
    for channel in route_order(grant.channels)[:MAX_ATTEMPTS]:
        body = dict(grant.body)
        body["model"] = channel.upstream_model(grant.params.model)
        started = time.perf_counter()
        try:
            reply = await adapter_for(channel).complete(channel, body)
        except UpstreamFailure as exc:
            attempts.append(
                {
                    "channel": channel.id,
                    "status": exc.upstream_status or exc.status,
                    "error": exc.code,
                    "ms": _elapsed_ms(started),
                }
            )
            if not exc.retryable:
                raise
            failure = exc
            continue
        attempts.append({"channel": channel.id, "status": 200, "ms": _elapsed_ms(started)})
        return reply, channel
    assert failure is not None
    raise failure


async def _finish(grant: Grant, outcome: Outcome) -> tuple[int, int]:
    # Shielded: a client that goes away must not stop the usage record being written.
    return await asyncio.shield(db(relay_finish)(grant=grant, outcome=outcome))


def _cancelled(grant: Grant, attempts: list[dict[str, Any]], started: float) -> Outcome:
    # The client went away while the upstream was working: the prompt was sent
    # upstream, so it is charged (counted locally); nothing was delivered.
    return Outcome(
        status=UsageRecord.Status.CANCELLED,
        http_status=499,
        error_code="client_disconnected",
        tokens=TokenCounts(input=count_messages(grant.body.get("messages") or [])),
        estimated=True,
        attempts=attempts,
        latency_ms=_elapsed_ms(started),
    )


async def _complete(grant: Grant, started: float) -> HttpResponse:
    attempts: list[dict[str, Any]] = []
    try:
        reply, channel = await call_with_failover(grant, attempts)
    except asyncio.CancelledError:
        await _finish(grant, _cancelled(grant, attempts, started))
        raise
    except UpstreamFailure as exc:
        return await _upstream_failed(grant, exc, attempts, started)

    tokens = reply.tokens
    estimated = tokens is None
    if tokens is None:
        tokens = TokenCounts(
            input=count_messages(grant.body.get("messages") or []),
            output=count_completion(reply.body),
        )
    _, cost = await _finish(
        grant,
        Outcome(
            status=UsageRecord.Status.SUCCESS,
            http_status=200,
            channel=channel,
            tokens=tokens,
            estimated=estimated,
            attempts=attempts,
            latency_ms=_elapsed_ms(started),
        ),
    )
    reply.body["usage"] = usage_payload(tokens, cost, reply.upstream_usage)
    return _json(reply.body, grant.request_id)


async def _upstream_failed(grant: Grant, exc: UpstreamFailure, attempts, started) -> HttpResponse:
    await _finish(
        grant,
        Outcome(
            status=UsageRecord.Status.UPSTREAM_ERROR,
            http_status=exc.status,
            error_code=exc.code,
            attempts=attempts,
            latency_ms=_elapsed_ms(started),
        ),
    )
    if exc.client_error is not None:
        return exc.client_error.response(grant.request_id)
    return errors.upstream_error(exc.status, exc.message, grant.request_id, exc.code).response(
        grant.request_id
    )


async def _stream(grant: Grant, started: float) -> HttpResponse | StreamingHttpResponse:
    attempts: list[dict[str, Any]] = []
    try:
        channel, stream, events, first = await open_with_failover(grant, attempts)
    except asyncio.CancelledError:
        await _finish(grant, _cancelled(grant, attempts, started))
        raise
    except UpstreamFailure as exc:
        return await _upstream_failed(grant, exc, attempts, started)
    relay = StreamRelay(
        grant=grant,
        channel=channel,
        stream=stream,
        events=events,
        first=first,
        attempts=attempts,
        started=started,
    )
    task = asyncio.current_task()
    if task is not None:
        task.add_done_callback(relay.finish_if_never_started)
    response = StreamingHttpResponse(relay.body(), content_type="text/event-stream; charset=utf-8")
    response["x-request-id"] = grant.request_id
    response["cache-control"] = "no-cache"
    response["x-accel-buffering"] = "no"
    return response


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    started = time.perf_counter()
    request_id = request_id_for(request)
    if request.method != "POST":
        return _method_not_allowed(request_id, "POST")
    try:
        grant = await db(relay_authorize)(
            raw_key=bearer_key(request),
            raw_body=request.body,
            client_ip=client_ip(request),
            request_id=request_id,
        )
        if grant.params.stream:
            return await _stream(grant, started)
        return await _complete(grant, started)
    except ApiError as exc:
        return exc.response(request_id)
    except Exception:
        logger.exception("request %s failed inside the gateway", request_id)
        return _internal_error(request_id)


@csrf_exempt
async def models(request: HttpRequest) -> HttpResponse:
    """The models this key may use, with its account's current prices."""
    from billing.selectors import prices_current

    request_id = request_id_for(request)
    if request.method != "GET":
        return _method_not_allowed(request_id, "GET")
    try:
        key = await db(authenticate)(bearer_key(request))
    except ApiError as exc:
        return exc.response(request_id)
    prices = await db(prices_current)(group_id=key.price_group_id)
    data = [
        {
            "id": model,
            "object": "model",
            "created": 0,
            "owned_by": "tollgate",
            "pricing": price.snapshot(),
        }
        for model, price in sorted(prices.items())
        if not key.allowed_models or model in key.allowed_models
    ]
    return _json({"object": "list", "data": data}, request_id)
