"""One relayed request, top to bottom.

    authenticate → validate → policy → route → limits → hold
      → upstream (one failover loop) → answer or stream → finish

``serve`` takes a request from what it arrived with to the point where it holds
money for its routes, then hands it to ``answer`` (the whole answer at once) or
``stream`` (events as they come). Each step is a function in a module of its own
(``auth``, the dialect's ``validate``, ``policy``, ``routing``, ``admission``,
``upstream``, ``respond``, ``finish``); ``request.RelayRequest`` owns what the
steps take and ends the request exactly once, however it ends.
"""

import asyncio
import logging
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, StreamingHttpResponse

from core.money import pico_to_usd
from usage.models import UsageRecord

from .. import errors, metrics
from ..dialects import Dialect
from ..dialects.base import Body
from ..errors import ApiError
from ..providers import UpstreamFailure
from . import admission, policy, respond, routing, upstream
from .auth import authenticate_async
from .finish import charges
from .request import Outcome, RelayRequest, ms_since

logger = logging.getLogger("tollgate.relay")


def body_limit(dialect: Dialect) -> int:
    """The largest body ``dialect`` takes, in bytes."""
    return dialect.max_body_bytes or settings.TOLLGATE["MAX_BODY_BYTES"]


async def serve(
    dialect: Dialect,
    *,
    method: str,
    raw_key: str | None,
    raw_body: Body | None,
    client_ip: str | None,
    supplied_request_id: str | None,
    forwarded: dict[str, str] | None = None,
    record_after_response: bool = False,
    content_type: str | None = None,
) -> HttpResponse | StreamingHttpResponse:
    """One relayed request, from what it arrived with; ``raw_body`` is None for a
    body over the dialect's limit (``body_limit``). The ASGI handler calls this
    directly for POSTs (``relay.asgi``); ``relay.views`` are the same endpoints for
    Django's own handlers.

    ``record_after_response``: the caller's event loop outlives the request (an ASGI
    server's), so a successful answer may be sent before its usage record is
    committed; the record is written by the request's ending meanwhile."""
    started = time.perf_counter()
    request_id = respond.request_id_for(supplied_request_id)
    if method != "POST":
        return respond.method_not_allowed(request_id, "POST", dialect)
    if raw_body is None:
        too_large = errors.request_too_large(body_limit(dialect))
        metrics.request_refused(endpoint=dialect.name, model="", error=too_large)
        return dialect.error_response(too_large, request_id)

    # 1. Authenticate: refusals here are counted, not recorded (no account to record on).
    try:
        key = await authenticate_async(raw_key)
    except ApiError as exc:
        metrics.request_refused(endpoint=dialect.name, model="", error=exc)
        return dialect.error_response(exc, request_id)
    except (OperationalError, InterfaceError) as exc:
        logger.warning("request %s failed: database unavailable (%s)", request_id, exc)
        unavailable = errors.service_unavailable(request_id)
        metrics.request_refused(endpoint=dialect.name, model="", error=unavailable)
        return dialect.error_response(unavailable, request_id)
    request = RelayRequest(
        request_id=request_id,
        dialect=dialect,
        key=key,
        client_ip=client_ip,
        started=started,
        forwarded=forwarded,
    )
    request.end_with(asyncio.current_task())
    try:
        # 2. Validate: the dialect checks what the gateway must understand.
        request.body = body = dialect.parse(raw_body, content_type)
        if isinstance(body.get("model"), str):
            # Kept on the refusal's usage record: PostgreSQL text cannot hold NUL.
            request.model_requested = body["model"][:200].replace("\x00", "")
        if isinstance(body.get("user"), str):
            request.user = body["user"][:256].replace("\x00", "")
        request.params = dialect.validate(body)
        # 3. Policy: what the key allows.
        policy.check(request)
        # A request continuing state the gateway keeps (a stored response) is expanded
        # with it and goes where it is kept. This lookup is the one statement allowed
        # before the upstream call: it decides the input and the channel, and money is
        # held for the input it adds.
        resolving = dialect.resolve(body, account_id=key.account_id)
        expanded = 0
        if resolving is not None:
            resolved = await resolving
            request.asked = body
            request.body = body = resolved.body
            request.channel_pin = resolved.channel_id
            expanded = resolved.prompt_tokens
        # 4. Route: the models and channels that may serve it, with their prices.
        request.routes = await routing.routes(request)
        # Labels the refusal in the metrics once the model is known to be priced; a raw
        # model name would give every made-up name its own series.
        request.priced_model = request.params.model
        request.prompt_estimate = dialect.prompt_estimate(raw_body, body) + expanded
        # 5. Limits, 6. the hold: taken through the request, which gives them back.
        await admission.admit(request)
        await admission.hold(request)
        # 7-9. The upstream, the answer or the stream, the finish.
        if request.params.stream:
            return await stream(request)
        return await answer(request, record_after_response)
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
    return respond.error(failure, request)


async def answer(request: RelayRequest, record_after: bool) -> HttpResponse:
    """The whole answer at once."""
    try:
        reply, route, channel = await upstream.answer(request)
    except UpstreamFailure as exc:
        return await upstream_failed(request, exc)
    estimated = reply.tokens is None
    tokens = request.dialect.units(
        request.params,
        reply.tokens or request.dialect.estimate(request.body, reply.body),
        reply,
    )
    outcome = Outcome(
        status=UsageRecord.Status.SUCCESS,
        http_status=200,
        route=route,
        channel=channel,
        tokens=tokens,
        estimated=estimated,
        attempts=request.attempts,
        latency_ms=ms_since(request.started),
    )
    # The cost in the answer is the one the record carries (both from the route's
    # price snapshot); the answer is rendered before the request ends, so an answer
    # that cannot be rendered is not recorded as served.
    _, bill, _ = charges(request, outcome)
    cost = bill.pico if bill is not None else 0
    body, content_type = request.dialect.content(reply, tokens, cost)
    response = respond.content(body, content_type, request)
    if reply.raw is not None:
        # An answer that is not JSON (a transcript as text) has nowhere else to say it.
        response["x-tollgate-cost"] = pico_to_usd(cost)
    keeps = request.dialect.keeps(request.body)
    if keeps:
        outcome.answer = reply.body
    ending = request.end(outcome)
    if keeps or not (record_after and request.admission is None):
        # The record is committed before the answer goes out. With ``record_after``
        # only a key with rate limits waits: its record gives its capacity back, so
        # that its next request finds the slot free; and an answer that is kept, so
        # that a follow-up sent as soon as it arrives finds it.
        await asyncio.shield(ending)
    return response


async def stream(request: RelayRequest) -> HttpResponse | StreamingHttpResponse:
    """Events as they come, once the first one arrived; the body ends the request."""
    try:
        (events, first), route, channel = await upstream.first_event(request)
    except UpstreamFailure as exc:
        return await upstream_failed(request, exc)
    return respond.stream(
        respond.StreamRelay(
            request=request, route=route, channel=channel, events=events, first=first
        )
    )


async def upstream_failed(request: RelayRequest, exc: UpstreamFailure) -> HttpResponse:
    """Every channel tried failed (or one refused the request as the caller's)."""
    request.trying = None
    await asyncio.shield(
        request.end(
            Outcome(
                status=UsageRecord.Status.UPSTREAM_ERROR,
                http_status=exc.status,
                error_code=exc.code,
                attempts=request.attempts,
                latency_ms=ms_since(request.started),
            )
        )
    )
    error = exc.client_error or errors.upstream_error(
        exc.status, exc.message, request.request_id, exc.code
    )
    return respond.error(error, request)
