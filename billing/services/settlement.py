"""Settlement: finished usage becomes ledger postings, exactly once."""

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Account
from billing.models import (
    Hold,
    KeySpend,
    LedgerAccount,
    Transaction,
)
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

    A request may cost more than its hold. The customer is charged at most what the
    released hold, the available balance and the account's overdraft allow; the rest
    is booked to the overage account and the account is refused until topped up.

    Reserving requests wait for the account row, so it is written last, just before
    its keys' spend rows and the commit. Only a batch that could cost more than it
    releases needs the balance up front, and locks the row from the start."""
    from usage.models import UsageRecord

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
        from billing.tasks import overage_alert

        logger.warning(
            "overage: account %s used %s micro-USD more than its balance could cover",
            account_id,
            overage_total,
        )
        enqueue_after_commit(overage_alert, account_id, overage_total)
    return account_id, -charged_total, -released
