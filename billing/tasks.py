"""Celery tasks: thin, take ids, call services."""

import logging
import threading
import time
from datetime import UTC, datetime

import redis
from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail

from accounts.models import Account
from core import shared
from core.threads import spawn

from . import services
from .reconcile import ledger_check
from .statements import statement_generate

logger = logging.getLogger("tollgate.billing")


def _tell_staff(subject: str, message: str) -> None:
    recipients = list(
        get_user_model()
        .objects.filter(is_staff=True, is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
    )
    if recipients:
        send_mail(
            subject=f"[Tollgate] {subject}",
            message=message,
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=recipients,
        )


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=30)
def usage_settle(self, usage_id: int) -> int:
    """Settle one usage record. Safe to deliver more than once: settled records are
    skipped. If another settlement holds the row (or a dead worker's does, until
    the database notices), try again shortly instead of giving up."""
    from usage.models import UsageRecord

    settled = services.settlement_run(usage_ids=[usage_id])
    if not settled and UsageRecord.objects.filter(pk=usage_id, settled_at__isnull=True).exists():
        raise self.retry(countdown=2)
    return settled


# Set while a drain is queued and not yet started; requests finishing meanwhile need
# not queue another (their records are committed before the drain reads).
SETTLE_SCHEDULED = "tg:settle:scheduled"


# A web process asks at most once per window; asks that fall inside a window are
# answered by one trailing ask at its end, made after their records committed. An
# ask costs the web process a Redis round trip (and, when no drain is queued, a
# Celery message): a quarter of a second bounds that to a few per second however
# busy the process is, and lets each drain settle a bigger batch, at the price of
# balances catching up a quarter of a second later (holds cover the gap).
SETTLE_ASK_WINDOW = 0.25
_ask_lock = threading.Lock()
_ask_last = 0.0
_ask_timer: threading.Timer | None = None


def settlement_request(*, background: bool = False) -> None:
    """Ask for pending usage to be settled, coalescing requests: at most one drain is
    queued at a time, so a busy gateway sends one message per drain instead of one
    per request, and the drain settles in batches (one ledger transaction per
    account per batch). Each web process also debounces its own asks, so a busy
    process touches Redis a few times a second rather than once per request. Without
    Redis the drain runs right here (embedded mode).

    ``background``: the caller is the relay's event loop, which must not wait for
    Redis; an ask that is due is made on a thread."""
    global _ask_last, _ask_timer
    if settings.CELERY_TASK_ALWAYS_EAGER:
        # The drain runs right here: never on the relay's event loop.
        if background:
            spawn(_settlement_ask)
        else:
            _settlement_ask()
        return
    now = time.monotonic()
    with _ask_lock:
        if now - _ask_last >= SETTLE_ASK_WINDOW:
            _ask_last = now
        else:
            if _ask_timer is None:
                _ask_timer = threading.Timer(SETTLE_ASK_WINDOW - (now - _ask_last), _trailing_ask)
                _ask_timer.daemon = True
                _ask_timer.start()
            return
    if background:
        spawn(_settlement_ask)
    else:
        _settlement_ask()


def settlement_flush() -> None:
    """Make the ask a pending trailing ask would make, now: a process about to exit
    has its last records settled at once, not by the beat's next sweep."""
    global _ask_timer
    with _ask_lock:
        timer, _ask_timer = _ask_timer, None
    if timer is not None:
        timer.cancel()
        _settlement_ask()


def _trailing_ask() -> None:
    global _ask_last, _ask_timer
    with _ask_lock:
        _ask_timer = None
        _ask_last = time.monotonic()
    _settlement_ask()


# Queue a drain unless one is queued; returns -1 if one was, else the delay (ms) that
# keeps drains at least the minimum interval apart.
_ASK = shared.Script(
    """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
return math.max(0, last + tonumber(ARGV[1]) - now)
"""
)
# A drain starts: clear the queued flag (a record committed from now on asks again)
# and note when, by Redis's clock.
_DRAIN_STARTED = shared.Script(
    """
local t = redis.call('TIME')
redis.call('SET', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), 'EX', 3600)
return redis.call('DEL', KEYS[1])
"""
)
SETTLE_LAST = "tg:settle:last"


def _settlement_ask() -> None:
    conn = shared.client()
    if conn is None:
        if not settings.REDIS_URL:
            usage_settle_pending.delay()
        # Redis is down: the beat's sweep settles when it is back.
        return
    interval_ms = int(settings.TOLLGATE["SETTLE_INTERVAL"] * 1000)
    try:
        delay_ms = _ASK([SETTLE_SCHEDULED, SETTLE_LAST], [interval_ms, 10 + interval_ms // 1000])
    except redis.RedisError as exc:
        shared.failed(exc)
        return
    if delay_ms >= 0:
        # A quiet gateway is settled at once; a busy one at most once per interval, so
        # each drain takes a batch worth a ledger transaction rather than a handful.
        usage_settle_pending.apply_async(countdown=delay_ms / 1000 if delay_ms else None)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def usage_settle_pending(limit: int = 500) -> int:
    """Settle everything finished and not yet settled, a batch at a time. Queued by
    finishing requests (coalesced), and run by the beat as the safety net for a lost
    message or a broker that restarted empty."""
    conn = shared.client()
    if conn is not None:
        try:
            _DRAIN_STARTED([SETTLE_SCHEDULED, SETTLE_LAST], [])
        except redis.RedisError as exc:
            shared.failed(exc)
    total = 0
    # A batch that was not full took everything committed before it began; anything
    # committed since asked for its own drain.
    while (settled := services.settlement_run(limit=limit)) > 0:
        total += settled
        if settled < limit:
            break
    return total


@shared_task(acks_late=True, reject_on_worker_lost=True)
def holds_expire() -> int:
    return services.holds_expire()


@shared_task
def ledger_reconcile() -> int:
    """Check the books; tell the staff about any breach. Never fixes anything."""
    breaches = ledger_check()
    for breach in breaches:
        logger.error("ledger breach: %s", breach)
    if breaches:
        _tell_staff(
            f"ledger check found {len(breaches)} breach(es)",
            "\n".join(str(b) for b in breaches[:200]),
        )
    return len(breaches)


@shared_task
def statements_generate(period_start: str | None = None) -> int:
    """Store last month's statement for every account (or the given month's)."""
    if period_start is None:
        today = datetime.now(UTC).date()
        month = today.replace(day=1)
        start = (
            month.replace(year=month.year - 1, month=12)
            if month.month == 1
            else month.replace(month=month.month - 1)
        )
    else:
        start = datetime.strptime(period_start, "%Y-%m-%d").date()
    count = 0
    for account_id in Account.objects.values_list("pk", flat=True):
        statement_generate(account_id=account_id, period_start=start)
        count += 1
    return count


@shared_task
def low_balance_alert(account_id: int) -> None:
    """Tell the account's members their balance fell below their threshold."""
    from core.money import micro_to_usd

    account = Account.objects.filter(pk=account_id).first()
    if account is None or account.low_balance_threshold is None:
        return
    recipients = list(
        account.memberships.exclude(user__email="").values_list("user__email", flat=True)
    )
    if recipients:
        threshold = micro_to_usd(account.low_balance_threshold)
        send_mail(
            subject=f"[Tollgate] {account.name}: balance below ${threshold}",
            message=(
                f"The balance of {account.name} is now ${micro_to_usd(account.balance)}, below "
                f"the ${threshold} you asked to be told about. "
                "Top up (or redeem a code) to keep your requests flowing."
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=recipients,
        )


@shared_task
def overage_alert(account_id: int, amount: int) -> None:
    account = Account.objects.filter(pk=account_id).first()
    if account is not None:
        _tell_staff(
            f"overage on {account.name}",
            f"Account {account.name} (#{account.pk}) used {amount} micro-USD more than its "
            "balance and overdraft could cover. It is refused until topped up.",
        )
