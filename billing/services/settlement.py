"""Settlement: finished usage becomes ledger postings, exactly once."""

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Account
from billing.models import (
    Carry,
    Hold,
    KeySpend,
    LedgerAccount,
    Transaction,
)
from core.money import PICO_PER_MICRO
from core.transactions import enqueue_after_commit
from usage.services import usage_daily_add

from .holds import SpendDeltas, _release_spend_hold, keyspend_apply, utc_periods
from .ledger import _low_balance_watch, customer_entry, ledger_post, system_entry

logger = logging.getLogger("tollgate.billing")


def settlement_run(*, usage_ids: Sequence[int] | None = None, limit: int = 500) -> int:
    """Settle finished, unsettled usage records; returns how many were settled.

    Exactly once per record: rows are locked (``SKIP LOCKED``, so workers share the
    queue) and only those still unsettled are taken. Each account's records in the
    batch become one ledger transaction. A hold that already expired is not released
    a second time: the charge is then taken from the balance directly.

    Records cost exact pico-USD. Each account is charged whole micro-USD: the exact
    sum of its records in the batch plus what it carried from its last batch, rounded
    down; the rest (under one micro-USD) is carried to its next batch (``Carry``). So
    what an account is charged over any period is the exact sum of its records to
    within one micro-USD, and nothing is free however small. What they cost upstream
    is booked the same way, with a carry of its own.

    A batch may cost more than its holds. The customer is charged at most what the
    released holds, the available balance and the account's overdraft allow; the rest
    is booked to the overage account and the account is refused until topped up.

    Reserving requests wait for the account row, so it is written last, just before
    its keys' spend rows and the commit. Only a batch that could cost more than it
    releases needs the balance up front, and locks the row from the start. The carry
    rows are taken first, in account order; reservations never touch them."""
    from usage.models import UNIT_COLUMNS, UsageRecord

    with transaction.atomic(durable=True):
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
                "cost_pico",
                "upstream_cost_pico",
                "model_served",
                "model_requested",
                "channel_id",
                "created_at",
                "status",
                *UNIT_COLUMNS,
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
        charged = sorted(
            a
            for a, recs in by_account.items()
            if any(r["cost_pico"] or r["upstream_cost_pico"] for r in recs)
        )
        carried = carry_take(account_ids=charged)
        now = timezone.now()
        spend: SpendDeltas = defaultdict(lambda: [0, 0])
        moves = [
            _settle_account_batch(
                account_id, by_account[account_id], holds, now, spend, carried.get(account_id)
            )
            for account_id in sorted(by_account)
        ]
        usage_daily_add(records=rows)
        account_of_key = {r["api_key_id"]: r["account_id"] for r in rows}
        with_spend = {account_of_key.get(k) for (k, _, _), d in spend.items() if d[0] or d[1]}
        for move in moves:
            if move.balance or move.held:
                Account.objects.filter(pk=move.account_id).update(
                    balance=F("balance") + move.balance, held=F("held") + move.held
                )
                if move.balance:
                    _low_balance_watch(move.account_id)
            elif move.account_id in with_spend:
                list(Account.objects.filter(pk=move.account_id).select_for_update(no_key=True))
        carry_put(
            carries={
                m.account_id: m.carry
                for m in moves
                if m.account_id in carried and m.carry != carried[m.account_id]
            }
        )
        # The keys' spend rows after their accounts' rows, in the order a reservation
        # takes them (the account, then its key's spend rows): taken the other way
        # round, a settlement and a reservation on a key with spend limits could each
        # hold the row the other waits for.
        keyspend_apply(spend)
    return len(rows)


@dataclass(frozen=True, slots=True)
class _Move:
    """What one account's part of a batch does to its cached figures and carry."""

    account_id: int
    balance: int
    held: int
    # What is carried to the next batch: (charges, upstream cost), pico-USD
    carry: tuple[int, int]


def shares(parts: Sequence[int], total: int) -> list[int]:
    """``total`` micro-USD split over ``parts`` (pico-USD) in whole micro-USD, in
    proportion: each part's whole micro-USD, and the micro-USD left over one each
    to the parts with the largest remainders (the earlier part on a tie). Only parts
    above zero get a share; they add up to ``total`` exactly. ``total`` is at least
    the sum of the parts' whole micro-USD and at most one more per part above zero."""
    out = [p // PICO_PER_MICRO for p in parts]
    left = total - sum(out)
    if left:
        order = sorted(
            (i for i, p in enumerate(parts) if p > 0),
            key=lambda i: (-(parts[i] % PICO_PER_MICRO), i),
        )
        if not 0 <= left <= len(order):
            raise ValueError(f"{total} cannot be split over {len(order)} parts")
        for i in order[:left]:
            out[i] += 1
    return out


def _settle_account_batch(
    account_id: int,
    recs: list[dict],
    holds: dict,
    now: datetime,
    spend: "SpendDeltas",
    carry_in: tuple[int, int] | None,
) -> _Move:
    """Post one account's part of a batch; returns what the caller applies last."""
    from usage.models import UsageRecord

    def open_amount(r: dict) -> int:
        hold = holds.get(r["hold_id"])
        return hold["amount"] if hold is not None and hold["status"] == Hold.Status.OPEN else 0

    released = sum(open_amount(r) for r in recs)
    carry_pico, carry_upstream = carry_in or (0, 0)
    due, carry_out = divmod(sum(r["cost_pico"] for r in recs) + carry_pico, PICO_PER_MICRO)
    charged = due
    # When the batch costs at most what its open holds release, it only raises what
    # is available, so no cap can apply and the balance is not needed.
    if due > released:
        # FOR NO KEY UPDATE: requests inserting rows that reference the account (holds,
        # usage records) only take a KEY SHARE lock and need not wait for this.
        acct = (
            Account.objects.select_for_update(no_key=True)
            .values("balance", "held", "overdraft_limit")
            .get(pk=account_id)
        )
        available = acct["balance"] - (acct["held"] - released) + acct["overdraft_limit"]
        charged = min(due, max(0, available))
    overage = due - charged
    costs = shares([r["cost_pico"] for r in recs], due)
    upstream_costs = [r["upstream_cost_pico"] for r in recs]
    due_upstream, upstream_out = divmod(sum(upstream_costs) + carry_upstream, PICO_PER_MICRO)
    owed = shares(upstream_costs, due_upstream)
    revenue: dict[tuple[str, int | None], int] = defaultdict(int)
    upstream: dict[tuple[str, int | None], int] = defaultdict(int)
    settled_holds: list[int] = []
    released_holds: list[int] = []
    for r, cost, owed_upstream in zip(recs, costs, owed, strict=True):
        if open_amount(r):
            hold = holds[r["hold_id"]]
            (settled_holds if r["cost_pico"] else released_holds).append(hold["pk"])
            _release_spend_hold(spend, r["api_key_id"], hold)
        if cost and r["api_key_id"]:
            day, month = utc_periods(r["created_at"])
            spend[(r["api_key_id"], KeySpend.Period.DAY, day)][0] += cost
            spend[(r["api_key_id"], KeySpend.Period.MONTH, month)][0] += cost
        dims = (r["model_served"] or r["model_requested"], r["channel_id"])
        if cost:
            revenue[dims] += cost
        if owed_upstream:
            upstream[dims] += owed_upstream

    txn = None
    if revenue or upstream:
        entries = [customer_entry(account_id, -charged)]
        entries += [
            system_entry(LedgerAccount.Kind.REVENUE, amt, model=m, channel_id=c)
            for (m, c), amt in revenue.items()
        ]
        entries.append(system_entry(LedgerAccount.Kind.OVERAGE, -overage))
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
    if overage:
        from billing.tasks import overage_alert

        logger.warning(
            "overage: account %s used %s micro-USD more than its balance could cover",
            account_id,
            overage,
        )
        enqueue_after_commit(overage_alert, account_id, overage)
    return _Move(
        account_id=account_id,
        balance=-charged,
        held=-released,
        carry=(carry_out, upstream_out),
    )


_CARRY_TAKE_SQL = (
    "INSERT INTO {table} (account_id, pico, upstream_pico) VALUES {rows} "
    "ON CONFLICT (account_id) DO UPDATE SET pico = {table}.pico "
    "RETURNING account_id, pico, upstream_pico"
)


def carry_take(*, account_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Lock the accounts' carry rows (made at zero where missing), in the order
    given, and read them (charges, upstream cost): one statement, on PostgreSQL and
    SQLite alike."""
    if not account_ids:
        return {}
    sql = _CARRY_TAKE_SQL.format(
        table=Carry._meta.db_table, rows=", ".join(["(%s, 0, 0)"] * len(account_ids))
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, list(account_ids))
        return {account: (pico, upstream) for account, pico, upstream in cursor.fetchall()}


def carry_put(*, carries: dict[int, tuple[int, int]]) -> None:
    """Store the accounts' new carries (rows locked by ``carry_take``)."""
    if not carries:
        return
    table = Carry._meta.db_table
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET pico = %s, upstream_pico = %s WHERE account_id = %s",  # noqa: S608
            [(pico, up, account_id) for account_id, (pico, up) in sorted(carries.items())],
        )
