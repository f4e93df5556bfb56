"""The two database steps of a relayed request: authorise+reserve, and finish.

Both are synchronous and run on a worker thread; each makes one round trip to the
database when the caches are warm.
"""

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from accounts.keys import key_hash, key_is_well_formed
from accounts.selectors import AuthKey, auth_key_get
from billing.pricing import Price, TokenCounts
from billing.selectors import price_current
from billing.services import HoldRefused, hold_reserve
from usage.models import UsageRecord
from usage.services import usage_record_finish, usage_record_reject

from . import errors
from .errors import ApiError
from .selectors import ChannelInfo, channels_for_model
from .validation import ChatParams, parse_json_object, validate_chat

# Framing overhead added to the byte-based prompt estimate used for the hold.
_PROMPT_OVERHEAD_TOKENS = 16


@dataclass(slots=True)
class Grant:
    """A request that passed every check and has money held for it."""

    request_id: str
    key: AuthKey
    body: dict[str, Any]
    params: ChatParams
    price: Price
    hold_id: int
    hold_amount: int
    channels: list[ChannelInfo]
    client_ip: str | None
    prompt_estimate: int


@dataclass(slots=True)
class Outcome:
    """How a granted request ended."""

    status: str
    http_status: int
    channel: ChannelInfo | None = None
    error_code: str = ""
    tokens: TokenCounts = field(default_factory=TokenCounts)
    estimated: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: int = 0
    ttft_ms: int | None = None


def authenticate(raw_key: str | None) -> AuthKey:
    if not raw_key:
        raise errors.invalid_api_key(
            "You didn't provide an API key. Send it as `Authorization: Bearer sk-...`."
        )
    if not key_is_well_formed(raw_key):
        raise errors.invalid_api_key()
    key = auth_key_get(key_hash=key_hash(raw_key))
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


def _completion_reserve(params: ChatParams) -> int:
    per_choice = params.max_tokens or settings.TOLLGATE["DEFAULT_COMPLETION_RESERVE"]
    return per_choice * params.n


def relay_authorize(
    *, raw_key: str | None, raw_body: bytes, client_ip: str | None, request_id: str
) -> Grant:
    """Authenticate, validate, apply the key's policy and reserve the hold.

    Raises ApiError. Refusals after authentication leave a ``rejected`` usage record
    so the account owner can see them in the usage log."""
    key = authenticate(raw_key)
    model = ""
    user = ""
    try:
        body = parse_json_object(raw_body)
        if isinstance(body.get("model"), str):
            model = body["model"][:200]
        if isinstance(body.get("user"), str):
            user = body["user"][:256]
        params = validate_chat(body)
        if not _ip_allowed(key.ip_allowlist, client_ip):
            raise errors.permission_denied(
                f"Requests from {client_ip} are not allowed for this API key.", "ip_not_allowed"
            )
        if key.allowed_models and params.model not in key.allowed_models:
            raise errors.permission_denied(
                f"This API key is not allowed to use the model `{params.model}`.",
                "model_not_allowed",
            )
        price = price_current(group_id=key.price_group_id, model=params.model)
        if price is None:
            raise errors.model_not_found(params.model)
        channels = channels_for_model(params.model)
        if not channels:
            raise errors.upstream_error(
                503,
                f"No upstream channel is serving `{params.model}` right now.",
                request_id,
                "no_channel_available",
            )
        prompt_estimate = len(raw_body) // 3 + _PROMPT_OVERHEAD_TOKENS
        amount = price.reserve(
            prompt_tokens=prompt_estimate, completion_tokens=_completion_reserve(params)
        )
        try:
            hold_id = hold_reserve(
                api_key_id=key.id, account_id=key.account_id, amount=amount, request_id=request_id
            )
        except HoldRefused as refused:
            if refused.reason == HoldRefused.KEY_INACTIVE:
                raise errors.invalid_api_key() from None
            if refused.reason == HoldRefused.ACCOUNT_SUSPENDED:
                raise _account_suspended() from None
            raise errors.insufficient_balance() from None
    except ApiError as exc:
        if exc.status != 401:
            usage_record_reject(
                request_id=request_id,
                account_id=key.account_id,
                api_key_id=key.id,
                model_requested=model,
                http_status=exc.status,
                error_code=exc.code or exc.type,
                user=user,
                client_ip=client_ip,
            )
        raise
    return Grant(
        request_id=request_id,
        key=key,
        body=body,
        params=params,
        price=price,
        hold_id=hold_id,
        hold_amount=amount,
        channels=channels,
        client_ip=client_ip,
        prompt_estimate=prompt_estimate,
    )


def relay_finish(*, grant: Grant, outcome: Outcome) -> tuple[int, int]:
    """Write the usage record and queue its settlement. Returns (record id, cost).

    Failed requests cost nothing; their hold is released by the same settlement."""
    charged = outcome.status in (
        UsageRecord.Status.SUCCESS,
        UsageRecord.Status.CANCELLED,
        UsageRecord.Status.INTERRUPTED,
    )
    model = grant.params.model
    channel = outcome.channel
    cost = grant.price.cost(outcome.tokens) if charged else 0
    upstream_cost = 0
    if charged and channel is not None and model in channel.cost_prices:
        upstream_cost = channel.cost_prices[model].cost(outcome.tokens)
    t = outcome.tokens if charged else TokenCounts()
    record = usage_record_finish(
        request_id=grant.request_id,
        account_id=grant.key.account_id,
        api_key_id=grant.key.id,
        hold_id=grant.hold_id,
        model_requested=model,
        model_served=model if channel is not None else "",
        upstream_model=channel.upstream_model(model) if channel is not None else "",
        channel_id=channel.id if channel is not None else None,
        attempts=outcome.attempts,
        status=outcome.status,
        http_status=outcome.http_status,
        error_code=outcome.error_code,
        stream=grant.params.stream,
        input_tokens=t.input,
        cache_read_tokens=t.cache_read,
        cache_write_tokens=t.cache_write,
        output_tokens=t.output,
        reasoning_tokens=t.reasoning,
        estimated=outcome.estimated and charged,
        price_snapshot=grant.price.snapshot(),
        cost=cost,
        upstream_cost=upstream_cost,
        latency_ms=outcome.latency_ms,
        ttft_ms=outcome.ttft_ms,
        user=grant.params.user,
        client_ip=grant.client_ip,
    )
    return record.pk, cost
