"""Steps 5 and 6: the key's rate limits and the hold.

The limits admit the request against its requests, tokens and concurrency per
minute (Redis, or this process when embedded); the hold reserves, in one
statement, what the request may cost at most on the dearest of its routes, and
checks the balance and the key's spend limits while doing it. Both are taken
through the request, which gives them back however it ends.
"""

from datetime import UTC, datetime, timedelta

from django.conf import settings

from billing.services import HoldRefused, hold_reserve_start
from core.threads import db_future

from .. import errors, limits
from ..dialects.base import RequestParams
from ..errors import ApiError
from .auth import account_suspended
from .request import RelayRequest


def completion_reserve(params: RequestParams) -> int:
    """The completion tokens a request may produce, as held for."""
    if params.prompt_only:
        return 0
    per_choice = params.max_tokens or settings.TOLLGATE["DEFAULT_COMPLETION_RESERVE"]
    return per_choice * params.n


async def admit(request: RelayRequest) -> None:
    """Take the key's rate-limit admission, if it has limits; raises ApiError (429)."""
    key = request.key
    if not limits.applies(key):
        return
    try:
        await request.take_admission(
            db_future(
                limits.admit,
                key=key,
                request_id=request.request_id,
                tokens=request.prompt_estimate + completion_reserve(request.params),
            )
        )
    except limits.RateLimited as exc:
        raise rate_limited(exc) from None


async def hold(request: RelayRequest) -> None:
    """Reserve the most the request may cost; raises ApiError when the balance or a
    spend limit does not cover it."""
    key = request.key
    completion = completion_reserve(request.params)
    amount = max(
        r.price.hold(
            prompt_tokens=request.prompt_estimate,
            completion_tokens=completion,
            units=request.params.units,
        )
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
        return account_suspended()
    if refused.reason in (HoldRefused.DAILY_LIMIT, HoldRefused.MONTHLY_LIMIT):
        which = "daily" if refused.reason == HoldRefused.DAILY_LIMIT else "monthly"
        retry = _seconds_until_next(refused.reason)
        return errors.rate_limited(
            f"This API key has reached its {which} spend limit.",
            code="spend_limit_exceeded",
            headers={"retry-after": str(retry)},
        )
    return errors.insufficient_balance()


def rate_limited(exc: limits.RateLimited) -> ApiError:
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
