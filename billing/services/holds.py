"""Holds: money set aside for a request while it runs, and released when it
expires. Reserved in one statement that also checks the key, the account and the
key's spend limits."""

import asyncio
import functools
import logging
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from django.conf import settings
from django.db import connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F
from django.db.models.functions import Now
from django.utils import timezone

from accounts.models import Account, ApiKey
from billing.models import (
    Hold,
    KeySpend,
)
from core import adb
from core.sql import fetch_one
from core.threads import db_future

logger = logging.getLogger("tollgate.billing")


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


_RESERVE_SQL = "SELECT tollgate_hold_reserve(%s, %s, %s, %s)"
_RESERVE_MANY_SQL = (
    "SELECT tollgate_hold_reserve_many(%s::bigint[], %s::bigint[], %s::bigint[], %s::varchar[])"
)


class HoldBackend(Protocol):
    """How a hold is reserved: a raw result, the hold id or a negative refusal code
    for ``hold_granted``. Two backends apply the same rules, chosen once at
    start-up by the database (tests/billing: one sequence drives both)."""

    def reserve(self, *, api_key_id: int, account_id: int, amount: int, request_id: str) -> int:
        """On a database thread (the ORM's connection)."""
        ...

    def reserve_soon(
        self, *, api_key_id: int, account_id: int, amount: int, request_id: str
    ) -> "asyncio.Future[int]":
        """From the relay's event loop: the future of the raw result."""
        ...


class PostgresHolds:
    """The ``tollgate_hold_reserve`` function: the key's status and expiry, the
    account's status, the conditional ``held`` increment, the key's daily and monthly
    spend limits and the hold row, in one statement, so concurrent requests can never
    take ``held`` past ``balance`` nor a key past its spend limits. From the event
    loop, holds asked for together go as one statement (``core.adb.GroupCommit``)."""

    def reserve(self, *, api_key_id: int, account_id: int, amount: int, request_id: str) -> int:
        (result,) = fetch_one(_RESERVE_SQL, [api_key_id, account_id, amount, request_id])
        return result

    def reserve_soon(
        self, *, api_key_id: int, account_id: int, amount: int, request_id: str
    ) -> "asyncio.Future[int]":
        return adb.grouped("hold", (api_key_id, account_id, amount, request_id), _reserve_group)


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


class PortableHolds:
    """The same rules in plain statements, for the embedded SQLite database (which
    serialises writers, so one transaction of them suffices)."""

    @staticmethod
    @transaction.atomic(durable=True)
    def reserve(*, api_key_id: int, account_id: int, amount: int, request_id: str) -> int:
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

    def reserve_soon(
        self, *, api_key_id: int, account_id: int, amount: int, request_id: str
    ) -> "asyncio.Future[int]":
        return db_future(
            self.reserve,
            api_key_id=api_key_id,
            account_id=account_id,
            amount=amount,
            request_id=request_id,
        )


@functools.cache
def hold_backend() -> HoldBackend:
    """The backend for this process's database, chosen once."""
    if connection.vendor == "postgresql":
        return PostgresHolds()
    return PortableHolds()


def hold_granted(result: int) -> int:
    """The hold id, or the refusal the reservation's negative result codes for."""
    if result < 0:
        raise HoldRefused(_REFUSALS[result])
    return result


def hold_reserve(*, api_key_id: int, account_id: int, amount: int, request_id: str) -> int:
    """Set ``amount`` aside for a request; returns the hold id or raises HoldRefused."""
    if amount <= 0:
        raise ValueError("a hold must be positive")
    return hold_granted(
        hold_backend().reserve(
            api_key_id=api_key_id, account_id=account_id, amount=amount, request_id=request_id
        )
    )


def hold_reserve_start(
    *, api_key_id: int, account_id: int, amount: int, request_id: str
) -> "asyncio.Future[int]":
    """Start reserving a hold from the relay's event loop: the future of the
    reservation's raw result (see ``HoldBackend``). The reservation runs to its end
    if the caller stops waiting: whoever owns the request collects the result and
    gives a granted hold back."""
    if amount <= 0:
        raise ValueError("a hold must be positive")
    return hold_backend().reserve_soon(
        api_key_id=api_key_id, account_id=account_id, amount=amount, request_id=request_id
    )


async def hold_reserve_async(
    *, api_key_id: int, account_id: int, amount: int, request_id: str
) -> int:
    """``hold_reserve`` awaited on the relay's event loop (see ``hold_reserve_start``)."""
    return hold_granted(
        await hold_reserve_start(
            api_key_id=api_key_id, account_id=account_id, amount=amount, request_id=request_id
        )
    )


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
        with transaction.atomic(durable=True):
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
