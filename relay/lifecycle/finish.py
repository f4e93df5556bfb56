"""The end of every request: its usage record, its settlement asked for, its limits
given back, its channels' health, its metrics and its access line.

Called once per request, from ``RelayRequest.end``. On PostgreSQL with warm caches
the record is the request's second and last database statement (``core.adb``); a
dialect that keeps its answers (a stored response) adds one more, after it.
"""

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from django.db import InterfaceError, OperationalError

from billing.pricing import Bill
from billing.tasks import settlement_request
from core.money import Units, pico_to_usd
from core.threads import db
from core.transactions import enqueue_after_commit
from usage.models import UsageRecord, unit_columns
from usage.services import (
    usage_record_finish_async,
    usage_record_for_hold_async,
    usage_record_reject,
)

from .. import health, limits, metrics
from ..channels import channel_disable
from ..tasks import channel_health_changed

if TYPE_CHECKING:
    from ..selectors import ChannelInfo
    from .request import Outcome, RelayRequest, Route

logger = logging.getLogger("tollgate.relay")
access_log = logging.getLogger("tollgate.access")

CHARGED = frozenset(
    {UsageRecord.Status.SUCCESS, UsageRecord.Status.CANCELLED, UsageRecord.Status.INTERRUPTED}
)


# How long a finished request keeps trying to write its usage record while the
# database cannot be reached: a restart or a failover takes seconds, and the
# upstream call it records has been paid for.
FINISH_RETRY_SECONDS = 30.0


async def _usage_record_write(request: "RelayRequest", fields: dict[str, Any]) -> int:
    deadline = time.monotonic() + FINISH_RETRY_SECONDS
    pause = 0.1
    retrying = False
    while True:
        try:
            if retrying:
                # A connection that broke while the record was being committed may
                # have lost only the acknowledgement: the hold identifies the record.
                assert request.hold_id is not None
                existing = await usage_record_for_hold_async(hold_id=request.hold_id)
                if existing is not None:
                    return existing
            return await usage_record_finish_async(**fields)
        except (OperationalError, InterfaceError):
            if time.monotonic() + pause > deadline:
                raise
            logger.warning(
                "database unavailable; retrying the usage record of %s", request.request_id
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)
        retrying = True


def charges(request: "RelayRequest", outcome: "Outcome") -> tuple[Units, Bill | None, int]:
    """What a finished request is billed for: (units, the bill from the route's price,
    the upstream cost in pico-USD at the channel's cost price), without I/O. Failed
    requests cost nothing (no bill)."""
    if outcome.status not in CHARGED or request.hold_id is None:
        return Units(), None, 0
    route = outcome.route or request.routes[0]
    units = outcome.tokens
    if outcome.bill is None:
        outcome.bill = route.price.bill(units)
    if outcome.upstream_cost is None:
        channel = outcome.channel
        prices = channel.cost_prices if channel is not None else {}
        outcome.upstream_cost = prices[route.model].cost(units) if route.model in prices else 0
    return units, outcome.bill, outcome.upstream_cost


async def finish(request: "RelayRequest", outcome: "Outcome") -> tuple[int | None, int]:
    """Write the usage record (waiting out a database restart), have its settlement
    asked for, give back rate-limit capacity, report channel health, count it in the
    metrics and write its access line. Returns (record id, cost).

    Failed requests cost nothing; their hold is released by the same settlement. A
    request that never got a hold (refused, or ended before it) leaves a record that
    needs no settlement, except a rate-limited one: those are counted, not stored, so
    a client hammering a limit cannot fill the usage table."""
    if request.hold_id is None:
        usage_id = None
        if outcome.error_code not in _NOT_RECORDED:
            usage_id = await db(usage_record_reject)(
                request_id=request.request_id,
                endpoint=request.dialect.name,
                account_id=request.key.account_id,
                api_key_id=request.key.id,
                model_requested=request.model_requested,
                status=outcome.status,
                http_status=outcome.http_status,
                error_code=outcome.error_code,
                stream=request.params.stream,
                attempts=outcome.attempts,
                latency_ms=outcome.latency_ms,
                user=request.user,
                client_ip=request.client_ip,
            )
        if usage_id is not None:
            settlement_request(background=True)
        await _limits_release(request, 0)
        metrics.request_ended(
            endpoint=request.dialect.name, model=request.priced_model, outcome=outcome
        )
        _access_line(request, outcome, request.priced_model, Units(), 0, usage_id)
        return usage_id, 0
    tokens, bill, upstream_cost = charges(request, outcome)
    cost = bill.pico if bill is not None else 0
    route = outcome.route or request.routes[0]
    channel = outcome.channel
    usage_id = await _usage_record_write(
        request,
        {
            "request_id": request.request_id,
            "endpoint": request.dialect.name,
            "account_id": request.key.account_id,
            "api_key_id": request.key.id,
            "hold_id": request.hold_id,
            "model_requested": request.params.model,
            "model_served": route.model if channel is not None else "",
            "upstream_model": channel.upstream_model(route.model) if channel is not None else "",
            "channel_id": channel.id if channel is not None else None,
            "attempts": outcome.attempts,
            "status": outcome.status,
            "http_status": outcome.http_status,
            "error_code": outcome.error_code,
            "stream": request.params.stream,
            **unit_columns(tokens),
            # Estimated only where a local count changed the bill: an image or a
            # second of audio billed from the request is exact.
            "estimated": outcome.estimated and bill is not None and bill.counts_tokens,
            "price_snapshot": route.price.snapshot(bill) if bill is not None else {},
            "cost_pico": cost,
            "upstream_cost_pico": upstream_cost,
            "latency_ms": outcome.latency_ms,
            "ttft_ms": outcome.ttft_ms,
            "user": request.params.user,
            "client_ip": request.client_ip,
        },
    )
    # Committed: its settlement is asked for (coalesced, at most a few asks a second).
    settlement_request(background=True)
    if outcome.answer is not None and channel is not None and request.dialect.keeps(request.body):
        await _answer_keep(request, outcome.answer, channel, tokens, cost)
    # Before the response: the caller's next request may need the slot or tokens.
    await _limits_release(request, tokens.total)
    metrics.request_finished(
        request=request,
        outcome=outcome,
        model=route.model,
        tokens=tokens,
        cost=cost,
        upstream_cost=upstream_cost,
    )
    await _report_health(outcome, route)
    _access_line(request, outcome, route.model, tokens, cost, usage_id)
    return usage_id, cost


async def _answer_keep(
    request: "RelayRequest",
    answer: dict[str, Any],
    channel: "ChannelInfo",
    tokens: Units,
    cost: int,
) -> None:
    """The dialect keeps the answer (a stored response): one more statement, made
    after the record, so that keeping it never delays or endangers the bill. A failure
    leaves the answer served and billed but not kept."""
    try:
        await request.dialect.keep(
            body=request.asked if request.asked is not None else request.body,
            answer=answer,
            tokens=tokens,
            cost=cost,
            account_id=request.key.account_id,
            channel=channel,
        )
    except Exception:
        logger.exception("the answer of %s could not be kept", request.request_id)


# Refusals counted in the metrics and the log but not stored (see ``finish``).
_NOT_RECORDED = frozenset({"rate_limit_exceeded"})


async def _limits_release(request: "RelayRequest", tokens_used: int) -> None:
    if request.admission is not None:
        await db(limits.release)(request.admission, tokens_used=tokens_used)


def _access_line(
    request: "RelayRequest",
    outcome: "Outcome",
    model: str,
    tokens: Units,
    cost: int,
    usage_id: int | None,
) -> None:
    """One line per request for operators: ids, outcome, tokens, money and timings;
    never the prompt, the completion or a key. The request id comes from the logging
    filter."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    channel = outcome.channel
    access_log.info(
        "%s %s %s",
        request.dialect.name,
        model or request.model_requested,
        outcome.status,
        extra={
            "account_id": request.key.account_id,
            "api_key_id": request.key.id,
            "usage_id": usage_id,
            "channel_id": channel.id if channel is not None else None,
            "http_status": outcome.http_status,
            "error_code": outcome.error_code or None,
            "input_tokens": tokens.prompt,
            "output_tokens": tokens.completion,
            "cost_usd": pico_to_usd(cost),
            "latency_ms": outcome.latency_ms,
            "ttft_ms": outcome.ttft_ms,
            "attempts": len(outcome.attempts),
        },
    )


async def _report_health(outcome: "Outcome", route: "Route") -> None:
    """Failures (rare) and a channel's return are written to Redis from a thread,
    before the response goes out; a success on a healthy channel touches nothing but
    this process's latency average."""
    failures = [(a["channel"], a.get("error", "")) for a in outcome.attempts if a.get("error")]
    if outcome.status == UsageRecord.Status.INTERRUPTED and outcome.channel is not None:
        failures.append((outcome.channel.id, outcome.error_code))
    if failures:
        await db(_channels_failed)(failures)
    if outcome.status == UsageRecord.Status.SUCCESS and outcome.channel is not None:
        cooling = health.cooling_cached()
        if cooling is None or outcome.channel.id in cooling:
            await db(_channel_back)(outcome.channel.id)
        sample = outcome.ttft_ms if outcome.ttft_ms is not None else outcome.latency_ms
        health.latency_observed(route.model, sample)


def _channels_failed(failures: list[tuple[int, str]]) -> None:
    for channel_id, code in failures:
        if code == "upstream_auth_failed":
            channel_disable(
                channel_id=channel_id,
                reason="The upstream refused the channel's credentials (HTTP 401/403).",
            )
        elif code in health.HEALTH_ERRORS:
            until = health.channel_failed(channel_id)
            if until is not None:
                enqueue_after_commit(channel_health_changed, channel_id, until, code)


def _channel_back(channel_id: int) -> None:
    if health.channel_recovered(channel_id):
        enqueue_after_commit(channel_health_changed, channel_id, None, "")
