"""Every write that moves money. Amounts are integer micro-USD."""

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Account, ApiKey
from config.localcache import TTLCache

from .models import Entry, Hold, LedgerAccount, Transaction

logger = logging.getLogger(__name__)


class HoldRefused(Exception):
    """The hold could not be reserved; ``reason`` says why."""

    INSUFFICIENT_BALANCE = "insufficient_balance"
    KEY_INACTIVE = "key_inactive"
    ACCOUNT_SUSPENDED = "account_suspended"

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
_ledger_ids: TTLCache[int] = TTLCache(lambda: float("inf"))


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
    held_deltas: dict[int, int] | None = None,
) -> Transaction:
    """Post one balanced transaction and move the cached balances it touches.

    ``held_deltas`` lets settlement release holds in the same row update that moves
    the balance, so the account's no-overdraft constraint is checked on the final
    state only. Must run inside the caller's transaction."""
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
    balance_deltas: dict[int, int] = defaultdict(int)
    for e in lines:
        if e.customer_account_id is not None:
            balance_deltas[e.customer_account_id] += e.amount
    held_deltas = held_deltas or {}
    for acct in sorted(set(balance_deltas) | set(held_deltas)):
        Account.objects.filter(pk=acct).update(
            balance=F("balance") + balance_deltas.get(acct, 0),
            held=F("held") + held_deltas.get(acct, 0),
        )
    return txn


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


_RESERVE_SQL = """
WITH acc AS (
    UPDATE {account} AS a SET held = a.held + %(amount)s
    FROM {apikey} AS k
    WHERE k.id = %(key_id)s AND a.id = k.account_id AND a.id = %(account_id)s
      AND k.status = 'active' AND (k.expires_at IS NULL OR k.expires_at > now())
      AND a.status = 'active' AND a.balance - a.held >= %(amount)s
    RETURNING a.id
)
INSERT INTO {hold} (account_id, api_key_id, request_id, amount, status, created_at)
SELECT acc.id, %(key_id)s, %(request_id)s, %(amount)s, 'open', now() FROM acc
RETURNING id
"""


def hold_reserve(*, api_key_id: int, account_id: int, amount: int, request_id: str) -> int:
    """Set ``amount`` aside for a request; returns the hold id or raises HoldRefused.

    On PostgreSQL this is one statement: the conditional ``held`` increment and the
    hold row are written together, and the key's status and expiry and the account's
    status are re-checked by the database, so concurrent requests can never take
    ``held`` past ``balance``."""
    if amount <= 0:
        raise ValueError("a hold must be positive")
    params: dict[str, Any] = {
        "amount": amount,
        "key_id": api_key_id,
        "account_id": account_id,
        "request_id": request_id,
    }
    if connection.vendor == "postgresql":
        sql = _RESERVE_SQL.format(
            account=Account._meta.db_table, apikey=ApiKey._meta.db_table, hold=Hold._meta.db_table
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is not None:
            return row[0]
    else:
        with transaction.atomic():
            now = timezone.now()
            key_ok = (
                ApiKey.objects.filter(pk=api_key_id, account_id=account_id, status="active")
                .exclude(expires_at__lte=now)
                .exists()
            )
            if key_ok and Account.objects.filter(
                pk=account_id, status="active", balance__gte=F("held") + amount
            ).update(held=F("held") + amount):
                return Hold.objects.create(
                    account_id=account_id,
                    api_key_id=api_key_id,
                    request_id=request_id,
                    amount=amount,
                ).pk
    raise HoldRefused(_refusal_reason(api_key_id=api_key_id, account_id=account_id))


def _refusal_reason(*, api_key_id: int, account_id: int) -> str:
    key = ApiKey.objects.filter(pk=api_key_id).values("status", "expires_at").first()
    if key is None or key["status"] != ApiKey.Status.ACTIVE:
        return HoldRefused.KEY_INACTIVE
    if key["expires_at"] is not None and key["expires_at"] <= timezone.now():
        return HoldRefused.KEY_INACTIVE
    status = Account.objects.filter(pk=account_id).values_list("status", flat=True).first()
    if status != Account.Status.ACTIVE:
        return HoldRefused.ACCOUNT_SUSPENDED
    return HoldRefused.INSUFFICIENT_BALANCE


def settlement_run(*, usage_ids: Sequence[int] | None = None, limit: int = 500) -> int:
    """Settle finished, unsettled usage records; returns how many were settled.

    Exactly once per record: rows are locked (``SKIP LOCKED``, so workers share the
    queue) and only those still unsettled are taken. Each account's records in the
    batch become one ledger transaction; open holds are released in the same row
    update that moves the balance. A hold that already expired is not released a
    second time: the charge is then taken from the balance directly.

    A request may cost more than its hold. The customer is charged at most what the
    released hold, the available balance and the account's overdraft allow; the rest
    is booked to the overage account and the account is refused until topped up."""
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
                "hold_id",
                "cost",
                "upstream_cost",
                "model_served",
                "model_requested",
                "channel_id",
            )[:limit]
        )
        if not rows:
            return 0
        hold_ids = [r["hold_id"] for r in rows if r["hold_id"]]
        holds = {
            h["pk"]: h
            for h in Hold.objects.filter(pk__in=hold_ids)
            .order_by("pk")
            .select_for_update()
            .values("pk", "amount", "status")
        }
        by_account: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            by_account[r["account_id"]].append(dict(r))
        now = timezone.now()
        for account_id in sorted(by_account):
            _settle_account_batch(account_id, by_account[account_id], holds, now)
    return len(rows)


def _settle_account_batch(account_id: int, recs: list[dict], holds: dict, now) -> None:
    from usage.models import UsageRecord

    acct = (
        Account.objects.select_for_update()
        .values("balance", "held", "overdraft_limit")
        .get(pk=account_id)
    )
    balance, held = acct["balance"], acct["held"]
    released = 0
    charged_total = 0
    overage_total = 0
    revenue: dict[tuple[str, int | None], int] = defaultdict(int)
    upstream: dict[tuple[str, int | None], int] = defaultdict(int)
    settled_holds = []
    for r in recs:
        hold = holds.get(r["hold_id"])
        if hold is not None and hold["status"] == Hold.Status.OPEN:
            held -= hold["amount"]
            released += hold["amount"]
            settled_holds.append(hold["pk"])
        dims = (r["model_served"] or r["model_requested"], r["channel_id"])
        if r["cost"]:
            cap = max(0, balance - held + acct["overdraft_limit"])
            charged = min(r["cost"], cap)
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
            memo=f"usage {recs[0]['pk']}..{recs[-1]['pk']} ({len(recs)} requests)",
            entries=entries,
            held_deltas={account_id: -released} if released else None,
        )
    elif released:
        Account.objects.filter(pk=account_id).update(held=F("held") - released)
    if settled_holds:
        Hold.objects.filter(pk__in=settled_holds).update(
            status=Hold.Status.SETTLED, resolved_at=now
        )
    UsageRecord.objects.filter(pk__in=[r["pk"] for r in recs]).update(
        settled_at=now, settlement=txn
    )
    if overage_total:
        logger.warning(
            "overage: account %s used %s micro-USD more than its balance could cover",
            account_id,
            overage_total,
        )
