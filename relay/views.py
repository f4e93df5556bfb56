"""The ``/v1/*`` endpoints: plain async Django views, no DRF on the hot path."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from billing.pricing import TokenCounts, micro_to_usd
from config import logs
from config.logs import request_id_from
from config.threads import db
from usage.models import UsageRecord

from . import anthropic, errors
from .adapters import UpstreamFailure, UpstreamReply
from .errors import ApiError
from .normalize import usage_payload
from .providers import adapter_for
from .selectors import ChannelInfo
from .services import (
    CHAT,
    EMBEDDINGS,
    MESSAGES,
    Endpoint,
    Grant,
    Outcome,
    Route,
    authenticate_async,
    relay_authorize,
    relay_charges,
)
from .streaming import (
    AnthropicAccounting,
    ChatFormat,
    MessagesFromChatFormat,
    MessagesNativeFormat,
    OpenAIAccounting,
    StreamRelay,
    candidates,
    finish_usage,
    finish_usage_soon,
    open_with_failover,
)
from .tokens import count_completion, count_messages, count_text

logger = logging.getLogger("tollgate.relay")


def request_id_for(supplied: str | None) -> str:
    rid = request_id_from(supplied)
    # Every log line written while this request is served carries its id.
    logs.request_id.set(rid)
    return rid


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def bearer_key(request: HttpRequest) -> str | None:
    return bearer_token(request.headers.get("authorization"))


def key_for(endpoint: Endpoint, authorization: str | None, x_api_key: str | None) -> str | None:
    """The caller's key: a Bearer token, or for the Anthropic Messages API also
    ``x-api-key`` (which wins)."""
    if endpoint is MESSAGES and x_api_key:
        return x_api_key
    return bearer_token(authorization)


def client_ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _with_headers(response, grant: Grant):
    response["x-request-id"] = grant.request_id
    if grant.endpoint is MESSAGES:
        # Where the Anthropic SDK looks for it (``message._request_id``).
        response["request-id"] = grant.request_id
    for name, value in grant.rate_headers.items():
        response[name] = value
    return response


def _json(payload: Any, grant: Grant) -> HttpResponse:
    return _with_headers(
        HttpResponse(orjson.dumps(payload), content_type="application/json"), grant
    )


def _is_native(grant: Grant, channel: ChannelInfo) -> bool:
    """An Anthropic-shaped request going to an Anthropic channel: no translation."""
    return grant.endpoint is MESSAGES and channel.type == "anthropic"


def _upstream_body(grant: Grant, route: Route, channel: ChannelInfo) -> dict[str, Any]:
    if grant.endpoint is MESSAGES and not _is_native(grant, channel):
        body = anthropic.messages_to_chat(grant.body)
    else:
        body = dict(grant.body)
    body["model"] = channel.upstream_model(route.model)
    return body


def _prompt_messages(grant: Grant) -> list[Any]:
    if grant.endpoint is MESSAGES:
        return anthropic.messages_to_chat(grant.body)["messages"]
    return grant.body.get("messages") or []


def _cancelled(grant: Grant, attempts: list[dict[str, Any]], started: float) -> Outcome:
    # The client went away while the upstream was working: the prompt was sent
    # upstream, so it is charged (counted locally); nothing was delivered.
    return Outcome(
        status=UsageRecord.Status.CANCELLED,
        http_status=499,
        error_code="client_disconnected",
        tokens=TokenCounts(input=count_messages(_prompt_messages(grant))),
        estimated=True,
        attempts=attempts,
        latency_ms=_elapsed_ms(started),
    )


async def _upstream_failed(
    grant: Grant, exc: UpstreamFailure, attempts: list[dict[str, Any]], started: float
) -> HttpResponse:
    await finish_usage(
        grant,
        Outcome(
            status=UsageRecord.Status.UPSTREAM_ERROR,
            http_status=exc.status,
            error_code=exc.code,
            attempts=attempts,
            latency_ms=_elapsed_ms(started),
        ),
    )
    error = exc.client_error or errors.upstream_error(
        exc.status, exc.message, grant.request_id, exc.code
    )
    return _with_headers(error.response(anthropic=grant.endpoint is MESSAGES), grant)


# -- one answer ------------------------------------------------------------------------


async def _call(grant: Grant, route: Route, channel: ChannelInfo) -> UpstreamReply:
    adapter = adapter_for(channel)
    body = _upstream_body(grant, route, channel)
    if grant.endpoint is EMBEDDINGS:
        return await adapter.embeddings(channel, body)  # type: ignore[union-attr]
    if _is_native(grant, channel):
        return await adapter.messages_complete(channel, body)  # type: ignore[union-attr]
    return await adapter.complete(channel, body)


async def call_with_failover(
    grant: Grant, attempts: list[dict[str, Any]]
) -> tuple[UpstreamReply, Route, ChannelInfo]:
    """Try (model, channel) pairs in routing order until one answers."""
    failure: UpstreamFailure | None = None
    for route, channel in candidates(grant):
        started = time.perf_counter()
        try:
            reply = await _call(grant, route, channel)
        except UpstreamFailure as exc:
            attempts.append(
                {
                    "channel": channel.id,
                    "model": route.model,
                    "status": exc.upstream_status or exc.status,
                    "error": exc.code,
                    "ms": _elapsed_ms(started),
                }
            )
            if not exc.retryable:
                raise
            failure = exc
            continue
        attempts.append(
            {"channel": channel.id, "model": route.model, "status": 200, "ms": _elapsed_ms(started)}
        )
        return reply, route, channel
    assert failure is not None
    raise failure


def _estimate(grant: Grant, reply: UpstreamReply, native: bool) -> TokenCounts:
    """Tokens of an answer whose upstream reported no usage, counted locally."""
    prompt = count_messages(_prompt_messages(grant))
    if grant.endpoint is EMBEDDINGS:
        value = grant.body.get("input")
        items = [value] if isinstance(value, str) else value or []
        return TokenCounts(
            input=sum(count_text(i) if isinstance(i, str) else 1 for i in items)
            if not (items and isinstance(items[0], list))
            else sum(len(i) for i in items)
        )
    if native:
        text = "".join(
            b.get("text", "") for b in reply.body.get("content") or [] if isinstance(b, dict)
        )
        return TokenCounts(input=prompt, output=count_text(text))
    return TokenCounts(input=prompt, output=count_completion(reply.body))


def _render(
    grant: Grant,
    route: Route,
    channel: ChannelInfo,
    reply: UpstreamReply,
    tokens: TokenCounts,
    cost: int,
) -> dict[str, Any]:
    if grant.endpoint is MESSAGES:
        if _is_native(grant, channel):
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


async def _complete(grant: Grant, started: float, record_after: bool) -> HttpResponse:
    attempts: list[dict[str, Any]] = []
    try:
        reply, route, channel = await call_with_failover(grant, attempts)
    except asyncio.CancelledError:
        await finish_usage(grant, _cancelled(grant, attempts, started))
        raise
    except UpstreamFailure as exc:
        return await _upstream_failed(grant, exc, attempts, started)

    tokens = reply.tokens
    estimated = tokens is None
    if tokens is None:
        tokens = _estimate(grant, reply, _is_native(grant, channel))
    outcome = Outcome(
        status=UsageRecord.Status.SUCCESS,
        http_status=200,
        route=route,
        channel=channel,
        tokens=tokens,
        estimated=estimated,
        attempts=attempts,
        latency_ms=_elapsed_ms(started),
    )
    if record_after and grant.admission is None:
        # The answer goes out now and its usage record is committed right after, as a
        # stream's is after its last event: the cost in the answer is the one the
        # record carries (both from the route's price snapshot). A key with rate
        # limits waits for the record, which gives its capacity back, so that its
        # next request finds the slot free.
        _record_after_response(grant, outcome)
        _, cost, _ = relay_charges(grant, outcome)
    else:
        _, cost = await finish_usage(grant, outcome)
    return _json(_render(grant, route, channel, reply, tokens, cost), grant)


def _record_after_response(grant: Grant, outcome: Outcome) -> None:
    def written(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "request %s: its usage record could not be written (%s); its hold is "
                "released when it expires",
                grant.request_id,
                task.exception(),
            )

    finish_usage_soon(grant, outcome).add_done_callback(written)


# -- a stream --------------------------------------------------------------------------


def _opener(grant: Grant) -> Callable[[Route, ChannelInfo], Awaitable[Any]]:
    async def open_stream(route: Route, channel: ChannelInfo):
        adapter = adapter_for(channel)
        body = _upstream_body(grant, route, channel)
        if _is_native(grant, channel):
            return await adapter.messages_stream(channel, body)  # type: ignore[union-attr]
        options = body.get("stream_options")
        body["stream"] = True
        body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
        return await adapter.open_stream(channel, body)  # type: ignore[union-attr]

    return open_stream


async def _stream(grant: Grant, started: float) -> HttpResponse | StreamingHttpResponse:
    attempts: list[dict[str, Any]] = []
    try:
        route, channel, stream, events, first = await open_with_failover(
            grant, attempts, _opener(grant)
        )
    except asyncio.CancelledError:
        await finish_usage(grant, _cancelled(grant, attempts, started))
        raise
    except UpstreamFailure as exc:
        return await _upstream_failed(grant, exc, attempts, started)
    if _is_native(grant, channel):
        accounting: Any = AnthropicAccounting(grant.body)
        fmt: Any = MessagesNativeFormat()
    else:
        accounting = OpenAIAccounting(_prompt_messages(grant))
        fmt = (
            MessagesFromChatFormat(route.model) if grant.endpoint is MESSAGES else ChatFormat(grant)
        )
    relay = StreamRelay(
        grant=grant,
        route=route,
        channel=channel,
        stream=stream,
        events=events,
        first=first,
        attempts=attempts,
        started=started,
        accounting=accounting,
        fmt=fmt,
    )
    task = asyncio.current_task()
    if task is not None:
        task.add_done_callback(relay.finish_if_never_started)
    response = StreamingHttpResponse(relay.body(), content_type="text/event-stream; charset=utf-8")
    response["cache-control"] = "no-cache"
    response["x-accel-buffering"] = "no"
    return _with_headers(response, grant)


# -- the endpoints ---------------------------------------------------------------------


def _method_not_allowed(
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
    record_after_response: bool = False,
) -> HttpResponse | StreamingHttpResponse:
    """One relayed request, from what it arrived with; ``raw_body`` is None for a
    body over DATA_UPLOAD_MAX_MEMORY_SIZE (TOLLGATE["MAX_BODY_BYTES"]). The ASGI
    handler calls this directly for POSTs (``relay.asgi``); the views below are the
    same endpoints for Django's own handlers.

    ``record_after_response``: the caller's event loop outlives the request (an ASGI
    server's), so a successful answer may be sent before its usage record is
    committed; the record is written by a task of that loop."""
    started = time.perf_counter()
    request_id = request_id_for(supplied_request_id)
    anthropic_shape = endpoint is MESSAGES
    if method != "POST":
        return _method_not_allowed(request_id, "POST", anthropic_shape)
    if raw_body is None:
        limit = settings.TOLLGATE["MAX_BODY_BYTES"]
        return errors.request_too_large(limit).response(request_id, anthropic=anthropic_shape)
    try:
        grant = await relay_authorize(
            endpoint=endpoint,
            raw_key=raw_key,
            raw_body=raw_body,
            client_ip=client_ip,
            request_id=request_id,
        )
        if grant.params.stream:
            return await _stream(grant, started)
        return await _complete(grant, started, record_after_response)
    except ApiError as exc:
        return exc.response(request_id, anthropic=anthropic_shape)
    except (OperationalError, InterfaceError) as exc:
        logger.warning("request %s failed: database unavailable (%s)", request_id, exc)
        return errors.service_unavailable(request_id).response(
            request_id, anthropic=anthropic_shape
        )
    except Exception:
        logger.exception("request %s failed inside the gateway", request_id)
        return errors.internal_error(request_id).response(request_id, anthropic=anthropic_shape)


async def _serve(request: HttpRequest, endpoint: Endpoint) -> HttpResponse | StreamingHttpResponse:
    try:
        raw_body: bytes | None = request.body
    except RequestDataTooBig:
        raw_body = None
    return await serve(
        endpoint,
        method=request.method or "",
        raw_key=key_for(
            endpoint, request.headers.get("authorization"), request.headers.get("x-api-key")
        ),
        raw_body=raw_body,
        client_ip=client_ip(request),
        supplied_request_id=request.headers.get("x-request-id"),
    )


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    return await _serve(request, CHAT)


@csrf_exempt
async def embeddings(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    return await _serve(request, EMBEDDINGS)


@csrf_exempt
async def messages(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """The Anthropic Messages API; the key comes in ``x-api-key`` or as a Bearer token."""
    return await _serve(request, MESSAGES)


@csrf_exempt
async def models(request: HttpRequest) -> HttpResponse:
    """The models this key may use, with its account's current prices."""
    from billing.selectors import prices_current

    request_id = request_id_for(request.headers.get("x-request-id"))
    if request.method != "GET":
        return _method_not_allowed(request_id, "GET")
    try:
        key = await authenticate_async(bearer_key(request) or request.headers.get("x-api-key"))
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
    response = HttpResponse(
        orjson.dumps({"object": "list", "data": data}), content_type="application/json"
    )
    response["x-request-id"] = request_id
    return response
