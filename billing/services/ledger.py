"""The ledger: balanced, append-only postings, and the credits and adjustments
that go through it. Amounts are integer micro-USD."""

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from accounts.models import Account
from billing.models import (
    Entry,
    LedgerAccount,
    Transaction,
)
from core.localcache import TTLCache
from core.transactions import enqueue_after_commit

logger = logging.getLogger("tollgate.billing")


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


def ledger_account_open(sender: Any, instance: Account, created: bool, **kwargs: Any) -> None:
    """Every account has its customer ledger account from the moment it exists:
    opened on the account's ``post_save``, inside the transaction that creates it
    (connected in ``BillingConfig.ready``; accounts knows nothing of the ledger)."""
    if created and not kwargs.get("raw"):
        LedgerAccount.objects.create(
            code=f"customer:{instance.pk}", kind=LedgerAccount.Kind.CUSTOMER, account=instance
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
        from billing.tasks import low_balance_alert

        Account.objects.filter(pk=account_id).update(low_balance_alerted=True)
        enqueue_after_commit(low_balance_alert, account_id)
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
        with transaction.atomic(durable=True):
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
