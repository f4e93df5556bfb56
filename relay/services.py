"""The two database steps of a relayed request: authorise+reserve, and finish.

Both run on the event loop and make one database round trip each when the
per-process caches are warm (on PostgreSQL through ``core.adb``). A cache miss,
a key with rate limits (Redis) and the rare paths (refusals, channel failures) go
to a thread.
"""

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from accounts.keys import key_hash, key_is_well_formed
from accounts.models import AutoStrategy
from accounts.selectors import AuthKey, auth_key_cached, auth_key_get
from billing.pricing import Price
from billing.selectors import (
    PriceBook,
    price_book,
    price_book_cached,
    price_in_book,
    prices_in_book,
)
from billing.services import HoldRefused, hold_reserve_start
from billing.tasks import settlement_request
from core.money import TokenCounts
from core.threads import db, db_future
from core.transactions import enqueue_after_commit
from usage.models import UsageRecord
from usage.services import (
    usage_record_finish_async,
    usage_record_for_hold_async,
    usage_record_reject,
)

from . import errors, health, limits, metrics
from .errors import ApiError
from .models import Channel
from .router import MAX_ATTEMPTS
from .selectors import ChannelInfo, channel_cache_invalidate, channels_cached, channels_enabled
from .validation import (
    RequestParams,
    parse_json_object,
    validate_chat,
    validate_embeddings,
    validate_messages,
)

if TYPE_CHECKING:
    from .lifecycle import RelayRequest

logger = logging.getLogger("tollgate.relay")
access_log = logging.getLogger("tollgate.access")

# Framing overhead added to the byte-based prompt estimate used for holds and limits.
_PROMPT_OVERHEAD_TOKENS = 16
AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    validate: Any
    # Channel types able to serve it.
    channel_types: frozenset[str]
    # The mode of the models it serves (``ModelPrice.Mode``).
    mode: str = "chat"


CHAT = Endpoint("chat.completions", validate_chat, frozenset({"openai", "anthropic", "mock"}))
MESSAGES = Endpoint("messages", validate_messages, frozenset({"openai", "anthropic", "mock"}))
EMBEDDINGS = Endpoint(
    "embeddings", validate_embeddings, frozenset({"openai", "mock"}), mode="embedding"
)


@dataclass(frozen=True, slots=True)
class Route:
    """One model the request may be served as, its price and its channels."""

    model: str
    price: Price
    channels: list[ChannelInfo]


@dataclass(slots=True)
class Outcome:
    """How a granted request ended."""

    status: str
    http_status: int
    route: Route | None = None
    channel: ChannelInfo | None = None
    error_code: str = ""
    tokens: TokenCounts = field(default_factory=TokenCounts)
    estimated: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: int = 0
    ttft_ms: int | None = None


def _key_hash_of(raw_key: str | None) -> str:
    if not raw_key:
        raise errors.invalid_api_key(
            "You didn't provide an API key. Send it as `Authorization: Bearer sk-...`."
        )
    if not key_is_well_formed(raw_key):
        raise errors.invalid_api_key()
    return key_hash(raw_key)


def authenticate(raw_key: str | None) -> AuthKey:
    return _key_checked(auth_key_get(key_hash=_key_hash_of(raw_key)))


async def authenticate_async(raw_key: str | None) -> AuthKey:
    """``authenticate`` on the event loop: the key comes from this process's cache, or
    from the database on a thread when it is not cached."""
    hashed = _key_hash_of(raw_key)
    found, key = auth_key_cached(key_hash=hashed)
    if not found:
        key = await db(auth_key_get)(key_hash=hashed)
    return _key_checked(key)


def _key_checked(key: AuthKey | None) -> AuthKey:
    if key is None or not key.active:
        raise errors.invalid_api_key()
    if key.expires_at is not None and key.expires_at <= timezone.now():
        raise errors.invalid_api_key("This API key has expired.")
    if not key.account_active:
        raise _account_suspended()
    return key


def _account_suspended() -> ApiError:
    return errors.permission_denied(
        "This account is suspended; contact the administrator.", "account_suspended"
    )


def _ip_allowed(allowlist: tuple[str, ...], client_ip: str | None) -> bool:
    if not allowlist:
        return True
    if not client_ip:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    for entry in allowlist:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


@dataclass(frozen=True, slots=True)
class RouteState:
    """What choosing routes reads: the key's price book, the enabled channels, their
    health and (for ``auto`` by speed) the models' latencies. Taken from the
    per-process caches, so the choice itself does no I/O and can run on the event
    loop."""

    prices: PriceBook
    channels: list[ChannelInfo]
    cooling: dict[int, tuple[float, int]]
    latencies: dict[str, float]


def _needs_latencies(key: AuthKey, params: RequestParams) -> bool:
    return params.model == AUTO and key.auto_strategy == AutoStrategy.FASTEST


def _route_state_load(key: AuthKey, params: RequestParams) -> RouteState:
    return RouteState(
        prices=price_book(group_id=key.price_group_id),
        channels=channels_enabled(),
        cooling=health.cooling(),
        latencies=health.latencies() if _needs_latencies(key, params) else {},
    )


def _route_state_cached(key: AuthKey, params: RequestParams) -> RouteState | None:
    prices = price_book_cached(group_id=key.price_group_id)
    channels = channels_cached()
    cooling = health.cooling_cached()
    latencies = health.latencies_cached() if _needs_latencies(key, params) else {}
    if prices is None or channels is None or cooling is None or latencies is None:
        return None
    return RouteState(prices=prices, channels=channels, cooling=cooling, latencies=latencies)


def _usable_channels(model: str, endpoint: Endpoint, state: RouteState) -> list[ChannelInfo]:
    return [
        ch
        for ch in state.channels
        if model in ch.models
        and ch.type in endpoint.channel_types
        and health.available(state.cooling, ch.id)
    ]


def _auto_routes(key: AuthKey, endpoint: Endpoint, state: RouteState) -> list[Route]:
    """Candidate models for ``model: "auto"``, best first, by the account's strategy:
    the models the key may use whose mode is the endpoint's."""
    prices = prices_in_book(state.prices)
    names = [
        m
        for m, price in prices.items()
        if price.mode == endpoint.mode and (not key.allowed_models or m in key.allowed_models)
    ]
    if key.auto_models:
        names = [m for m in key.auto_models if m in names]
    routes = []
    for model in names:
        channels = _usable_channels(model, endpoint, state)
        if channels:
            routes.append(Route(model=model, price=prices[model], channels=channels))
    if key.auto_strategy == AutoStrategy.CHEAPEST:
        routes.sort(key=lambda r: (r.price.input + r.price.output, r.model))
    elif key.auto_strategy == AutoStrategy.FASTEST:
        # A model with no figure yet is tried first: that is how it gets one.
        latency = state.latencies
        routes.sort(key=lambda r: (latency.get(r.model, 0.0), r.model))
    return routes[:MAX_ATTEMPTS]


def _routes(
    key: AuthKey, params: RequestParams, endpoint: Endpoint, request_id: str, state: RouteState
) -> list[Route]:
    if params.model == AUTO:
        routes = _auto_routes(key, endpoint, state)
        if not routes:
            raise errors.upstream_error(
                503,
                "No model this key may use is being served right now.",
                request_id,
                "no_channel_available",
            )
        return routes
    if key.allowed_models and params.model not in key.allowed_models:
        raise errors.permission_denied(
            f"This API key is not allowed to use the model `{params.model}`.", "model_not_allowed"
        )
    price = price_in_book(state.prices, params.model)
    if price is None:
        raise errors.model_not_found(params.model)
    channels = _usable_channels(params.model, endpoint, state)
    if not channels:
        raise errors.upstream_error(
            503,
            f"No upstream channel is serving `{params.model}` right now.",
            request_id,
            "no_channel_available",
        )
    return [Route(model=params.model, price=price, channels=channels)]


def _completion_reserve(params: RequestParams) -> int:
    if params.prompt_only:
        return 0
    per_choice = params.max_tokens or settings.TOLLGATE["DEFAULT_COMPLETION_RESERVE"]
    return per_choice * params.n


def _seconds_until_next(period: str) -> int:
    now = datetime.now(UTC)
    if period == HoldRefused.DAILY_LIMIT:
        nxt = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    else:
        nxt = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return max(1, int((nxt - now).total_seconds()))


def _refused(refused: HoldRefused) -> ApiError:
    if refused.reason == HoldRefused.KEY_INACTIVE:
        return errors.invalid_api_key()
    if refused.reason == HoldRefused.ACCOUNT_SUSPENDED:
        return _account_suspended()
    if refused.reason in (HoldRefused.DAILY_LIMIT, HoldRefused.MONTHLY_LIMIT):
        which = "daily" if refused.reason == HoldRefused.DAILY_LIMIT else "monthly"
        retry = _seconds_until_next(refused.reason)
        return errors.rate_limited(
            f"This API key has reached its {which} spend limit.",
            code="spend_limit_exceeded",
            headers={"retry-after": str(retry)},
        )
    return errors.insufficient_balance()


def _rate_limited(exc: limits.RateLimited) -> ApiError:
    messages = {
        "requests": "Rate limit reached for requests per minute on this API key.",
        "tokens": "Rate limit reached for tokens per minute on this API key.",
        "key_concurrency": "Too many concurrent requests on this API key.",
        "account_concurrency": "Too many concurrent requests on this account.",
    }
    headers = dict(exc.headers)
    if exc.retry_after_ms < 0:
        message = "This request needs more tokens than the key's tokens-per-minute limit allows."
    else:
        message = messages.get(exc.reason, "Rate limit reached.")
        headers["retry-after"] = str(max(1, -(-exc.retry_after_ms // 1000)))
        headers["retry-after-ms"] = str(max(0, exc.retry_after_ms))
    return errors.rate_limited(message, code="rate_limit_exceeded", headers=headers)


async def relay_authorize(request: "RelayRequest", raw_body: bytes) -> None:
    """Validate, apply the key's policy and limits, reserve the hold: on success the
    request has its params, routes, limit admission and hold.

    Runs on the event loop: with warm caches the only I/O is the hold's one
    statement (and, for keys with rate limits, one Redis call on a thread). What it
    takes (limit slots, the hold) is taken through the request, which gives it back
    however the request ends. Raises ApiError for a refusal."""
    key = request.key
    body = parse_json_object(raw_body)
    request.body = body
    if isinstance(body.get("model"), str):
        # Kept on the refusal's usage record: PostgreSQL text cannot hold NUL.
        request.model_requested = body["model"][:200].replace("\x00", "")
    if isinstance(body.get("user"), str):
        request.user = body["user"][:256].replace("\x00", "")
    params = request.params = request.endpoint.validate(body)
    if not _ip_allowed(key.ip_allowlist, request.client_ip):
        raise errors.permission_denied(
            f"Requests from {request.client_ip} are not allowed for this API key.",
            "ip_not_allowed",
        )
    state = _route_state_cached(key, params) or await db(_route_state_load)(key, params)
    request.routes = _routes(key, params, request.endpoint, request.request_id, state)
    # Labels the refusal in the metrics once the model is known to be priced; a raw
    # model name would give every made-up name its own series.
    request.priced_model = params.model
    request.prompt_estimate = len(raw_body) // 3 + _PROMPT_OVERHEAD_TOKENS
    completion = _completion_reserve(params)
    if limits.applies(key):
        try:
            await request.take_admission(
                db_future(
                    limits.admit,
                    key=key,
                    request_id=request.request_id,
                    tokens=request.prompt_estimate + completion,
                )
            )
        except limits.RateLimited as exc:
            raise _rate_limited(exc) from None
    amount = max(
        r.price.reserve(prompt_tokens=request.prompt_estimate, completion_tokens=completion)
        for r in request.routes
    )
    try:
        await request.take_hold(
            hold_reserve_start(
                api_key_id=key.id,
                account_id=key.account_id,
                amount=amount,
                request_id=request.request_id,
            ),
            amount,
        )
    except HoldRefused as refused:
        raise _refused(refused) from None


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


def relay_charges(request: "RelayRequest", outcome: Outcome) -> tuple[TokenCounts, int, int]:
    """What a finished request is billed for: (tokens, cost, upstream cost), from the
    route's price snapshot, without I/O. Failed requests cost nothing."""
    if outcome.status not in CHARGED or request.hold_id is None:
        return TokenCounts(), 0, 0
    route = outcome.route or request.routes[0]
    channel = outcome.channel
    tokens = outcome.tokens
    upstream_cost = 0
    if channel is not None and route.model in channel.cost_prices:
        upstream_cost = channel.cost_prices[route.model].cost(tokens)
    return tokens, route.price.cost(tokens), upstream_cost


async def relay_finish(*, request: "RelayRequest", outcome: Outcome) -> tuple[int | None, int]:
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
                endpoint=request.endpoint.name,
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
            endpoint=request.endpoint.name, model=request.priced_model, outcome=outcome
        )
        _access_line(request, outcome, request.priced_model, TokenCounts(), 0, usage_id)
        return usage_id, 0
    tokens, cost, upstream_cost = relay_charges(request, outcome)
    route = outcome.route or request.routes[0]
    channel = outcome.channel
    usage_id = await _usage_record_write(
        request,
        {
            "request_id": request.request_id,
            "endpoint": request.endpoint.name,
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
            "input_tokens": tokens.input,
            "cache_read_tokens": tokens.cache_read,
            "cache_write_tokens": tokens.cache_write,
            "output_tokens": tokens.output,
            "reasoning_tokens": tokens.reasoning,
            "estimated": outcome.estimated and outcome.status in CHARGED,
            "price_snapshot": {"model": route.model, **route.price.snapshot()},
            "cost": cost,
            "upstream_cost": upstream_cost,
            "latency_ms": outcome.latency_ms,
            "ttft_ms": outcome.ttft_ms,
            "user": request.params.user,
            "client_ip": request.client_ip,
        },
    )
    # Committed: its settlement is asked for (coalesced, at most a few asks a second).
    settlement_request(background=True)
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


# Refusals counted in the metrics and the log but not stored (see ``relay_finish``).
_NOT_RECORDED = frozenset({"rate_limit_exceeded"})


async def _limits_release(request: "RelayRequest", tokens_used: int) -> None:
    if request.admission is not None:
        await db(limits.release)(request.admission, tokens_used=tokens_used)


def _access_line(
    request: "RelayRequest",
    outcome: Outcome,
    model: str,
    tokens: TokenCounts,
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
        request.endpoint.name,
        model or request.model_requested,
        outcome.status,
        extra={
            "account_id": request.key.account_id,
            "api_key_id": request.key.id,
            "usage_id": usage_id,
            "channel_id": channel.id if channel is not None else None,
            "http_status": outcome.http_status,
            "error_code": outcome.error_code or None,
            "input_tokens": tokens.input,
            "output_tokens": tokens.output,
            "cost": cost,
            "latency_ms": outcome.latency_ms,
            "ttft_ms": outcome.ttft_ms,
            "attempts": len(outcome.attempts),
        },
    )


async def _report_health(outcome: Outcome, route: Route) -> None:
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
    from .tasks import channel_health_changed

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
    from .tasks import channel_health_changed

    if health.channel_recovered(channel_id):
        enqueue_after_commit(channel_health_changed, channel_id, None, "")


def channel_disable(*, channel_id: int, reason: str) -> bool:
    """Take a channel out of service and tell the staff. True if it was enabled."""
    from .tasks import channel_alert

    changed = Channel.objects.filter(pk=channel_id, status=Channel.Status.ENABLED).update(
        status=Channel.Status.DISABLED,
        disabled_reason=reason[:300],
        last_error=reason[:300],
        last_error_at=timezone.now(),
    )
    channel_cache_invalidate()
    if changed:
        logger.error("channel %s disabled: %s", channel_id, reason)
        enqueue_after_commit(channel_alert, channel_id, reason)
    return bool(changed)


def channel_create(*, values: dict[str, Any]) -> Channel:
    """A new channel; ``api_key`` (the upstream key) is encrypted before it is stored."""
    values = dict(values)
    api_key = values.pop("api_key", "")
    channel = Channel(**values)
    channel.api_key = api_key
    channel.save()
    channel_cache_invalidate()
    return channel


def channel_update(*, channel: Channel, values: dict[str, Any]) -> Channel:
    """Save the given fields only (the relay keeps the health columns up to date
    meanwhile). Turning a disabled channel back on also ends its cool-down."""
    values = dict(values)
    changed = set(values)
    if "api_key" in values:
        channel.api_key = values.pop("api_key")
        changed = (changed - {"api_key"}) | {"api_key_encrypted"}
    reenabled = (
        values.get("status") == Channel.Status.ENABLED and channel.status != Channel.Status.ENABLED
    )
    for name, value in values.items():
        setattr(channel, name, value)
    if reenabled or values.get("status") == Channel.Status.ENABLED:
        health.channel_recovered(channel.pk)
        channel.cooling_until = None
        changed.add("cooling_until")
        if reenabled and "disabled_reason" not in values:
            channel.disabled_reason = ""
            changed.add("disabled_reason")
    channel.save(update_fields=[*sorted(changed), "updated_at"])
    channel_cache_invalidate()
    return channel
