"""Every write that moves money. Amounts are integer micro-USD."""

import asyncio
import hashlib
import logging
import secrets
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F
from django.db.models.functions import Now
from django.utils import timezone

from accounts.models import Account, ApiKey
from config import adb
from config.localcache import TTLCache
from config.sql import fetch_one
from config.threads import db_future
from usage.services import usage_daily_add

from .models import (
    Entry,
    Hold,
    KeySpend,
    LedgerAccount,
    ModelPrice,
    RedemptionCode,
    Transaction,
)

logger = logging.getLogger(__name__)


class HoldRefused(Exception):
    """The hold could not be reserved; ``reason`` says why."""

    INSUFFICIENT_BALANCE = "insufficient_balance"
    KEY_INACTIVE = "key_inactive"
    ACCOUNT_SUSPENDED = "account_suspended"
    DAILY_LIMIT = "daily_spend_limit"
    MONTHLY_LIMIT = "monthly_spend_limit"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LedgerError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class EntrySpec:
    ledger_account_id: int
    amount: int
    # Set on customer entries: the account whose cached balance moves with the entry.
    customer_account_id: int | None = None
    model: str = ""
    channel_id: int | None = None


# Ledger account ids never change once created; cache them for the life of the process.
_ledger_ids: TTLCache[int] = TTLCache("ledger_ids", lambda: float("inf"))


def _ledger_id(key: tuple, load: Callable[[], int]) -> int:
    cached = _ledger_ids.peek(key)
    if cached is not None:
        return cached
    value = load()
    if connection.in_atomic_block:
        # The row may have been created by this very transaction: remember its id
        # only once that transaction has committed.
        transaction.on_commit(lambda: _ledger_ids.put(key, value))
    else:
        _ledger_ids.put(key, value)
    return value


def ledger_account_system_id(kind: str) -> int:
    """Id of the single house ledger account of ``kind`` (created on first use)."""

    def load() -> int:
        obj, _ = LedgerAccount.objects.get_or_create(code=kind, defaults={"kind": kind})
        return obj.pk

    return _ledger_id(("system", kind), load)


def ledger_account_customer_id(account_id: int) -> int:
    return _ledger_id(
        ("customer", account_id),
        lambda: LedgerAccount.objects.values_list("pk", flat=True).get(account_id=account_id),
    )


def customer_entry(account_id: int, amount: int) -> EntrySpec:
    return EntrySpec(
        ledger_account_id=ledger_account_customer_id(account_id),
        amount=amount,
        customer_account_id=account_id,
    )


def system_entry(kind: str, amount: int, *, model: str = "", channel_id: int | None = None):
    return EntrySpec(
        ledger_account_id=ledger_account_system_id(kind),
        amount=amount,
        model=model,
        channel_id=channel_id,
    )


def ledger_post(
    *,
    kind: str,
    idempotency_key: str,
    entries: Iterable[EntrySpec],
    account_id: int | None = None,
    memo: str = "",
    created_by: User | None = None,
    apply_balances: bool = True,
) -> Transaction:
    """Post one balanced transaction and move the cached balances it touches.

    With ``apply_balances=False`` the caller moves the customer balances itself,
    later in the same transaction (settlement does, together with ``held``). Must
    run inside the caller's transaction."""
    if not connection.in_atomic_block:
        raise LedgerError("ledger_post must run inside transaction.atomic")
    lines = [e for e in entries if e.amount != 0]
    if not lines:
        raise LedgerError("a transaction needs at least one non-zero entry")
    if sum(e.amount for e in lines) != 0:
        raise LedgerError("entries do not sum to zero")
    txn = Transaction.objects.create(
        kind=kind,
        idempotency_key=idempotency_key,
        account_id=account_id,
        memo=memo[:500],
        created_by=created_by,
    )
    Entry.objects.bulk_create(
        [
            Entry(
                transaction=txn,
                ledger_account_id=e.ledger_account_id,
                amount=e.amount,
                model=e.model,
                channel_id=e.channel_id,
            )
            for e in lines
        ]
    )
    if not apply_balances:
        return txn
    balance_deltas: dict[int, int] = defaultdict(int)
    for e in lines:
        if e.customer_account_id is not None:
            balance_deltas[e.customer_account_id] += e.amount
    for acct in sorted(balance_deltas):
        Account.objects.filter(pk=acct).update(balance=F("balance") + balance_deltas[acct])
        _low_balance_watch(acct)
    return txn


def _low_balance_watch(account_id: int) -> None:
    """Arm, fire (once) or re-arm the account's low-balance email. The row is locked
    by the posting's own update, so reading it here is race-free."""
    row = (
        Account.objects.filter(pk=account_id)
        .values("balance", "low_balance_threshold", "low_balance_alerted")
        .first()
    )
    if row is None or row["low_balance_threshold"] is None:
        return
    below = row["balance"] < row["low_balance_threshold"]
    if below and not row["low_balance_alerted"]:
        from .tasks import low_balance_alert

        Account.objects.filter(pk=account_id).update(low_balance_alerted=True)
        transaction.on_commit(lambda: low_balance_alert.delay(account_id))
    elif not below and row["low_balance_alerted"]:
        Account.objects.filter(pk=account_id).update(low_balance_alerted=False)


def account_credit(
    *,
    account: Account,
    amount: int,
    kind: str = Transaction.Kind.TOPUP,
    memo: str = "",
    created_by: User | None = None,
    idempotency_key: str | None = None,
) -> Transaction:
    """Top up (amount > 0) or adjust (any non-zero amount) an account's balance.

    Idempotent when ``idempotency_key`` is given: a repeat returns the first posting.
    A negative adjustment that would overdraw the account is refused."""
    if kind == Transaction.Kind.TOPUP and amount <= 0:
        raise LedgerError("a top-up must be positive")
    if amount == 0:
        raise LedgerError("amount must not be zero")
    if kind not in (Transaction.Kind.TOPUP, Transaction.Kind.ADJUSTMENT):
        raise LedgerError(f"unsupported credit kind {kind!r}")
    source = (
        LedgerAccount.Kind.TOPUP
        if kind == Transaction.Kind.TOPUP
        else LedgerAccount.Kind.ADJUSTMENT
    )
    key = idempotency_key or f"{kind}:{account.pk}:{uuid.uuid4().hex}"
    if idempotency_key:
        existing = Transaction.objects.filter(idempotency_key=key).first()
        if existing is not None:
            return existing
    try:
        with transaction.atomic():
            return ledger_post(
                kind=kind,
                idempotency_key=key,
                account_id=account.pk,
                memo=memo,
                created_by=created_by,
                entries=[customer_entry(account.pk, amount), system_entry(source, -amount)],
            )
    except IntegrityError as exc:
        existing = Transaction.objects.filter(idempotency_key=key).first()
        if existing is not None:
            return existing
        raise LedgerError("the adjustment would take the balance below its limit") from exc


_REFUSALS = {
    -1: HoldRefused.KEY_INACTIVE,
    -2: HoldRefused.DAILY_LIMIT,
    -3: HoldRefused.MONTHLY_LIMIT,
    -4: HoldRefused.ACCOUNT_SUSPENDED,
    -5: HoldRefused.INSUFFICIENT_BALANCE,
}


def utc_periods(moment: datetime) -> tuple[date, date]:
    """The UTC day and month (first day) that ``moment`` falls in."""
    day = moment.astimezone(UTC).date()
    return day, day.replace(day=1)


def hold_reserve(*, api_key_id: int, account_id: int, amount: int, request_id: str) -> int:
    """Set ``amount`` aside for a request; returns the hold id or raises HoldRefused.

    One database round trip on PostgreSQL (the ``tollgate_hold_reserve`` function):
    the key's status and expiry, the account's status, the conditional ``held``
    increment, the key's daily and monthly spend limits and the hold row, all in one
    statement, so concurrent requests can never take ``held`` past ``balance`` nor a
    key past its spend limits."""
    if amount <= 0:
        raise ValueError("a hold must be positive")
    return hold_granted(_hold_reserve_raw(api_key_id, account_id, amount, request_id))


_RESERVE_SQL = "SELECT tollgate_hold_reserve(%s, %s, %s, %s)"


def hold_granted(result: int) -> int:
    """The hold id, or the refusal the reservation's negative result codes for."""
    if result < 0:
        raise HoldRefused(_REFUSALS[result])
    return result


def hold_reserve_start(
    *, api_key_id: int, account_id: int, amount: int, request_id: str
) -> "asyncio.Future[int]":
    """Start reserving a hold from the relay's event loop: the future of the
    reservation's raw result (a hold id, or a negative refusal code for
    ``hold_granted``). On PostgreSQL it goes with the holds other requests ask for at
    the same time, on the loop's own connection (``config.adb``); elsewhere on a
    database thread. Either way the reservation runs to its end if the caller stops
    waiting: whoever owns the request collects the result and gives a granted hold
    back."""
    if amount <= 0:
        raise ValueError("a hold must be positive")
    if not adb.enabled():
        return db_future(_hold_reserve_raw, api_key_id, account_id, amount, request_id)
    return adb.grouped("hold", (api_key_id, account_id, amount, request_id), _reserve_group)


async def hold_reserve_async(
    *, api_key_id: int, account_id: int, amount: int, request_id: str
) -> int:
    """``hold_reserve`` awaited on the relay's event loop (see ``hold_reserve_start``)."""
    return hold_granted(
        await hold_reserve_start(
            api_key_id=api_key_id, account_id=account_id, amount=amount, request_id=request_id
        )
    )


def _hold_reserve_raw(api_key_id: int, account_id: int, amount: int, request_id: str) -> int:
    if connection.vendor == "postgresql":
        (result,) = fetch_one(_RESERVE_SQL, [api_key_id, account_id, amount, request_id])
        return result
    return _hold_reserve_portable(api_key_id, account_id, amount, request_id)


_RESERVE_MANY_SQL = (
    "SELECT tollgate_hold_reserve_many(%s::bigint[], %s::bigint[], %s::bigint[], %s::varchar[])"
)


async def _reserve_group(holds: list[tuple[int, int, int, str]]) -> list[int]:
    """Reserve a group of holds (key, account, amount, request id) in one statement;
    the result of each. Each goes through the same function as a hold alone."""
    if len(holds) == 1:
        row = await adb.fetch_one(_RESERVE_SQL, holds[0])
        assert row is not None
        return [row[0]]
    # By account, then key: groups running at once lock shared rows in one order.
    order = sorted(range(len(holds)), key=lambda i: (holds[i][1], holds[i][0]))
    columns = [[holds[i][c] for i in order] for c in range(4)]
    row = await adb.fetch_one(_RESERVE_MANY_SQL, columns)
    assert row is not None
    results = [0] * len(holds)
    for position, i in enumerate(order):
        results[i] = row[0][position]
    return results


@transaction.atomic
def _hold_reserve_portable(api_key_id: int, account_id: int, amount: int, request_id: str) -> int:
    """The same rules as the PostgreSQL function, for the embedded SQLite database
    (which serialises writers, so plain statements in one transaction suffice)."""
    now = timezone.now()
    key = (
        ApiKey.objects.filter(pk=api_key_id, account_id=account_id)
        .values("status", "expires_at", "daily_spend_limit", "monthly_spend_limit")
        .first()
    )
    if key is None or key["status"] != ApiKey.Status.ACTIVE:
        return -1
    if key["expires_at"] is not None and key["expires_at"] <= now:
        return -1
    if not Account.objects.filter(
        pk=account_id, status=Account.Status.ACTIVE, balance__gte=F("held") + amount
    ).update(held=F("held") + amount):
        status = Account.objects.filter(pk=account_id).values_list("status", flat=True).first()
        transaction.set_rollback(True)
        return -5 if status == Account.Status.ACTIVE else -4
    day, month = utc_periods(now)
    tracked = {}
    for period, start, limit, code in (
        (KeySpend.Period.DAY, day, key["daily_spend_limit"], -2),
        (KeySpend.Period.MONTH, month, key["monthly_spend_limit"], -3),
    ):
        if limit is None:
            continue
        KeySpend.objects.get_or_create(api_key_id=api_key_id, period=period, start=start)
        if not KeySpend.objects.filter(
            api_key_id=api_key_id,
            period=period,
            start=start,
            spent__lte=limit - amount - F("held"),
        ).update(held=F("held") + amount):
            transaction.set_rollback(True)
            return code
        tracked[period] = start
    return Hold.objects.create(
        account_id=account_id,
        api_key_id=api_key_id,
        request_id=request_id,
        amount=amount,
        spend_day=tracked.get(KeySpend.Period.DAY),
        spend_month=tracked.get(KeySpend.Period.MONTH),
    ).pk


def settlement_run(*, usage_ids: Sequence[int] | None = None, limit: int = 500) -> int:
    """Settle finished, unsettled usage records; returns how many were settled.

    Exactly once per record: rows are locked (``SKIP LOCKED``, so workers share the
    queue) and only those still unsettled are taken. Each account's records in the
    batch become one ledger transaction. A hold that already expired is not released
    a second time: the charge is then taken from the balance directly.

    A request may cost more than its hold. The customer is charged at most what the
    released hold, the available balance and the account's overdraft allow; the rest
    is booked to the overage account and the account is refused until topped up.

    Reserving requests wait for the account row, so it is written last, just before
    its keys' spend rows and the commit. Only a batch that could cost more than it
    releases needs the balance up front, and locks the row from the start."""
    from usage.models import UsageRecord

    with transaction.atomic():
        qs = UsageRecord.objects.filter(settled_at__isnull=True)
        if usage_ids is not None:
            qs = qs.filter(pk__in=list(usage_ids))
        rows = list(
            qs.order_by("pk")
            .select_for_update(skip_locked=True, of=("self",))
            .values(
                "pk",
                "account_id",
                "api_key_id",
                "hold_id",
                "cost",
                "upstream_cost",
                "model_served",
                "model_requested",
                "channel_id",
                "created_at",
                "status",
                "input_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
                "output_tokens",
                "reasoning_tokens",
            )[:limit]
        )
        if not rows:
            return 0
        hold_ids = [r["hold_id"] for r in rows if r["hold_id"]]
        holds = {
            h["pk"]: h
            for h in Hold.objects.filter(pk__in=hold_ids)
            .order_by("pk")
            .select_for_update(no_key=True)
            .values("pk", "amount", "status", "spend_day", "spend_month")
        }
        by_account: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            by_account[r["account_id"]].append(dict(r))
        now = timezone.now()
        spend: SpendDeltas = defaultdict(lambda: [0, 0])
        moves = [
            _settle_account_batch(account_id, by_account[account_id], holds, now, spend)
            for account_id in sorted(by_account)
        ]
        usage_daily_add(records=rows)
        account_of_key = {r["api_key_id"]: r["account_id"] for r in rows}
        with_spend = {account_of_key.get(k) for (k, _, _), d in spend.items() if d[0] or d[1]}
        for account_id, balance_delta, held_delta in moves:
            if balance_delta or held_delta:
                Account.objects.filter(pk=account_id).update(
                    balance=F("balance") + balance_delta, held=F("held") + held_delta
                )
                if balance_delta:
                    _low_balance_watch(account_id)
            elif account_id in with_spend:
                list(Account.objects.filter(pk=account_id).select_for_update(no_key=True))
        # The keys' spend rows after their accounts' rows, in the order a reservation
        # takes them (the account, then its key's spend rows): taken the other way
        # round, a settlement and a reservation on a key with spend limits could each
        # hold the row the other waits for.
        keyspend_apply(spend)
    return len(rows)


# (api_key_id, period, start) -> [spent delta, held delta]
SpendDeltas = defaultdict[tuple[int, str, date], list[int]]


def keyspend_apply(deltas: SpendDeltas) -> None:
    """Add spent and held deltas to the keys' day and month spend rows (upsert)."""
    rows = [(k, p, s, d[0], d[1]) for (k, p, s), d in sorted(deltas.items()) if d[0] or d[1]]
    if not rows:
        return
    table = KeySpend._meta.db_table
    with connection.cursor() as cursor:
        # The held delta goes in the UPDATE branch only: it is never positive here and
        # the inserted row must pass the held >= 0 check on its own.
        cursor.executemany(
            f"INSERT INTO {table} (api_key_id, period, start, spent, held) "  # noqa: S608
            "VALUES (%s, %s, %s, %s, 0) ON CONFLICT (api_key_id, period, start) DO UPDATE "
            f"SET spent = {table}.spent + excluded.spent, held = {table}.held + %s",
            rows,
        )


def _settle_account_batch(
    account_id: int, recs: list[dict], holds: dict, now: datetime, spend: "SpendDeltas"
) -> tuple[int, int, int]:
    """Post one account's part of a batch; returns (account id, balance delta, held
    delta) for the caller to apply last."""
    from usage.models import UsageRecord

    def open_amount(r: dict) -> int:
        hold = holds.get(r["hold_id"])
        return hold["amount"] if hold is not None and hold["status"] == Hold.Status.OPEN else 0

    # When every request costs at most its own open hold, the batch only raises what
    # is available, so no cap can apply and the balance is not needed.
    capped = any(r["cost"] > open_amount(r) for r in recs)
    balance = held = overdraft = 0
    if capped:
        # FOR NO KEY UPDATE: requests inserting rows that reference the account (holds,
        # usage records) only take a KEY SHARE lock and need not wait for this.
        acct = (
            Account.objects.select_for_update(no_key=True)
            .values("balance", "held", "overdraft_limit")
            .get(pk=account_id)
        )
        balance, held, overdraft = acct["balance"], acct["held"], acct["overdraft_limit"]
    released = 0
    charged_total = 0
    overage_total = 0
    revenue: dict[tuple[str, int | None], int] = defaultdict(int)
    upstream: dict[tuple[str, int | None], int] = defaultdict(int)
    settled_holds: list[int] = []
    released_holds: list[int] = []
    for r in recs:
        amount = open_amount(r)
        if amount:
            hold = holds[r["hold_id"]]
            held -= amount
            released += amount
            (settled_holds if r["cost"] else released_holds).append(hold["pk"])
            _release_spend_hold(spend, r["api_key_id"], hold)
        if r["cost"] and r["api_key_id"]:
            day, month = utc_periods(r["created_at"])
            spend[(r["api_key_id"], KeySpend.Period.DAY, day)][0] += r["cost"]
            spend[(r["api_key_id"], KeySpend.Period.MONTH, month)][0] += r["cost"]
        dims = (r["model_served"] or r["model_requested"], r["channel_id"])
        if r["cost"]:
            charged = min(r["cost"], max(0, balance - held + overdraft)) if capped else r["cost"]
            balance -= charged
            charged_total += charged
            overage_total += r["cost"] - charged
            revenue[dims] += r["cost"]
        if r["upstream_cost"]:
            upstream[dims] += r["upstream_cost"]

    txn = None
    if revenue or upstream:
        entries = [customer_entry(account_id, -charged_total)]
        entries += [
            system_entry(LedgerAccount.Kind.REVENUE, amt, model=m, channel_id=c)
            for (m, c), amt in revenue.items()
        ]
        entries.append(system_entry(LedgerAccount.Kind.OVERAGE, -overage_total))
        entries += [
            system_entry(LedgerAccount.Kind.UPSTREAM_COST, amt, model=m, channel_id=c)
            for (m, c), amt in upstream.items()
        ]
        entries.append(system_entry(LedgerAccount.Kind.UPSTREAM_PAYABLE, -sum(upstream.values())))
        txn = ledger_post(
            kind=Transaction.Kind.CHARGE,
            idempotency_key=f"settle:{recs[0]['pk']}",
            account_id=account_id,
            memo=f"Usage: {len(recs)} request{'s' if len(recs) != 1 else ''}",
            entries=entries,
            apply_balances=False,
        )
    if settled_holds:
        Hold.objects.filter(pk__in=settled_holds).update(
            status=Hold.Status.SETTLED, resolved_at=now
        )
    if released_holds:
        Hold.objects.filter(pk__in=released_holds).update(
            status=Hold.Status.RELEASED, resolved_at=now
        )
    UsageRecord.objects.filter(pk__in=[r["pk"] for r in recs]).update(
        settled_at=now, settlement=txn
    )
    if overage_total:
        from .tasks import overage_alert

        logger.warning(
            "overage: account %s used %s micro-USD more than its balance could cover",
            account_id,
            overage_total,
        )
        transaction.on_commit(lambda: overage_alert.delay(account_id, overage_total))
    return account_id, -charged_total, -released


def _release_spend_hold(spend: SpendDeltas, api_key_id: int | None, hold: dict[str, Any]) -> None:
    if api_key_id is None:
        return
    if hold["spend_day"] is not None:
        spend[(api_key_id, KeySpend.Period.DAY, hold["spend_day"])][1] -= hold["amount"]
    if hold["spend_month"] is not None:
        spend[(api_key_id, KeySpend.Period.MONTH, hold["spend_month"])][1] -= hold["amount"]


def holds_expire(*, ttl_seconds: int | None = None, limit: int = 500) -> int:
    """Release open holds older than the TTL (by database time); returns how many.

    Rows are taken with ``SKIP LOCKED``: a hold being settled right now is left to
    its settlement, and several sweepers can run at once. A settlement that comes
    after the expiry charges the balance directly (its hold is no longer open)."""
    ttl = ttl_seconds if ttl_seconds is not None else settings.TOLLGATE["HOLD_TTL_SECONDS"]
    cutoff = ExpressionWrapper(Now() - timedelta(seconds=ttl), output_field=DateTimeField())
    total = 0
    while True:
        with transaction.atomic():
            holds = list(
                Hold.objects.filter(status=Hold.Status.OPEN, created_at__lt=cutoff)
                .order_by("pk")
                .select_for_update(skip_locked=True)
                .values("pk", "account_id", "api_key_id", "amount", "spend_day", "spend_month")[
                    :limit
                ]
            )
            if not holds:
                return total
            by_account: dict[int, int] = defaultdict(int)
            spend: SpendDeltas = defaultdict(lambda: [0, 0])
            for hold in holds:
                by_account[hold["account_id"]] += hold["amount"]
                _release_spend_hold(spend, hold["api_key_id"], dict(hold))
            for account_id in sorted(by_account):
                Account.objects.filter(pk=account_id).update(
                    held=F("held") - by_account[account_id]
                )
            Hold.objects.filter(pk__in=[h["pk"] for h in holds]).update(
                status=Hold.Status.EXPIRED, resolved_at=Now()
            )
            keyspend_apply(spend)
        total += len(holds)
        logger.warning("released %s expired holds", len(holds))
        if len(holds) < limit:
            return total


def account_adjust(
    *, account: Account, amount: int, reason: str, staff: User, idempotency_key: str | None = None
) -> Transaction:
    """A correction by a member of staff: any non-zero amount, always with a reason."""
    if not reason.strip():
        raise LedgerError("an adjustment needs a reason")
    if not getattr(staff, "is_staff", False):
        raise LedgerError("only staff may adjust balances")
    return account_credit(
        account=account,
        amount=amount,
        kind=Transaction.Kind.ADJUSTMENT,
        memo=reason.strip(),
        created_by=staff,
        idempotency_key=idempotency_key,
    )


# -- redemption codes ----------------------------------------------------------------

_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


class RedemptionError(Exception):
    pass


def _code_normal(code: str) -> str:
    return code.upper().replace("-", "").replace(" ", "").removeprefix("TG")


def _code_hash(code: str) -> str:
    return hashlib.sha256(_code_normal(code).encode()).hexdigest()


def redemption_codes_create(
    *,
    amount: int,
    count: int = 1,
    memo: str = "",
    created_by: User | None = None,
    expires_at: datetime | None = None,
) -> list[str]:
    """Make ``count`` codes worth ``amount`` micro-USD each. The codes are returned
    once; only their hashes are kept."""
    if amount <= 0 or not 1 <= count <= 1000:
        raise LedgerError("a code must be worth something, and at most 1000 are made at once")
    codes = []
    for _ in range(count):
        body = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(16))
        code = "TG-" + "-".join(body[i : i + 4] for i in range(0, 16, 4))
        RedemptionCode.objects.create(
            code_hash=_code_hash(code),
            last4=body[-4:],
            amount=amount,
            memo=memo[:200],
            created_by=created_by,
            expires_at=expires_at,
        )
        codes.append(code)
    return codes


@transaction.atomic
def redemption_redeem(*, account: Account, code: str, user: User | None = None) -> Transaction:
    """Credit ``account`` with a code's value, once: the code row is locked and the
    posting's idempotency key is the code's, so two redemptions cannot both succeed."""
    row = RedemptionCode.objects.select_for_update().filter(code_hash=_code_hash(code)).first()
    if row is None:
        raise RedemptionError("This code is not valid.")
    if row.redeemed_at is not None:
        raise RedemptionError("This code has already been redeemed.")
    if row.expires_at is not None and row.expires_at <= timezone.now():
        raise RedemptionError("This code has expired.")
    txn = ledger_post(
        kind=Transaction.Kind.REDEMPTION,
        idempotency_key=f"redeem:{row.pk}",
        account_id=account.pk,
        memo=f"Redemption code …{row.last4}" + (f" ({row.memo})" if row.memo else ""),
        created_by=user,
        entries=[
            customer_entry(account.pk, row.amount),
            system_entry(LedgerAccount.Kind.REDEMPTION, -row.amount),
        ],
    )
    RedemptionCode.objects.filter(pk=row.pk).update(
        redeemed_by=account, redeemed_at=timezone.now(), transaction=txn
    )
    return txn


def model_price_set(
    *,
    group_id: int,
    model: str,
    input_per_m: Decimal,
    output_per_m: Decimal,
    cache_read_per_m: Decimal | None = None,
    cache_write_per_m: Decimal | None = None,
    reasoning_per_m: Decimal | None = None,
    request_fee: Decimal = Decimal(0),
    effective_from: datetime | None = None,
    mode: str = ModelPrice.Mode.CHAT,
) -> ModelPrice:
    """Publish a new price version. Requests already made keep the price they had;
    a version dated in the future applies from that moment."""
    price = ModelPrice.objects.create(
        group_id=group_id,
        model=model,
        input_per_m=input_per_m,
        output_per_m=output_per_m,
        cache_read_per_m=cache_read_per_m,
        cache_write_per_m=cache_write_per_m,
        reasoning_per_m=reasoning_per_m,
        request_fee=request_fee,
        effective_from=effective_from or timezone.now(),
        mode=mode,
    )
    from .selectors import price_cache_invalidate

    price_cache_invalidate(group_id=group_id)
    return price
