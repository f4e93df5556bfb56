"""Monthly statements, computed from the ledger alone.

Period membership is the posting time of each transaction (UTC months). The
statement's figures and line items are checked against each other before it is
stored, and the database refuses a statement whose closing is not opening +
credits + charges.
"""

from datetime import UTC, date, datetime

from django.db import IntegrityError, transaction
from django.db.models import Count, Sum, Value
from django.db.models.functions import Coalesce, NullIf

from usage.models import UNIT_COLUMNS, UsageRecord

from .models import Entry, LedgerAccount, Statement
from .services import LedgerError

# The token columns every usage line shows; the other units only where used.
_ALWAYS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)


def month_after(start: date) -> date:
    return date(start.year + start.month // 12, start.month % 12 + 1, 1)


def _moment(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def statement_compute(*, account_id: int, period_start: date) -> dict:
    """The statement's figures and lines (nothing is stored)."""
    period_start = period_start.replace(day=1)
    period_end = month_after(period_start)
    start, end = _moment(period_start), _moment(period_end)
    customer = Entry.objects.filter(ledger_account__account_id=account_id)
    opening = (
        customer.filter(transaction__created_at__lt=start).aggregate(s=Sum("amount"))["s"] or 0
    )
    period = customer.filter(transaction__created_at__gte=start, transaction__created_at__lt=end)
    credits = period.filter(amount__gt=0).aggregate(s=Sum("amount"))["s"] or 0
    charges = period.filter(amount__lt=0).aggregate(s=Sum("amount"))["s"] or 0

    credit_lines = [
        {"kind": row["transaction__kind"], "count": row["n"], "amount": row["total"]}
        for row in period.filter(amount__gt=0)
        .values("transaction__kind")
        .annotate(n=Count("pk"), total=Sum("amount"))
        .order_by("transaction__kind")
    ]
    # Each model's charge is what the ledger booked as revenue for it (the records'
    # exact costs, in whole micro-USD with the account's carry); its units are counted
    # from the records those charges settled.
    in_period = {
        "transaction__account_id": account_id,
        "transaction__kind": "charge",
        "transaction__created_at__gte": start,
        "transaction__created_at__lt": end,
    }
    revenue = {
        row["model"]: row["total"]
        for row in Entry.objects.filter(
            ledger_account__kind=LedgerAccount.Kind.REVENUE, **in_period
        )
        .values("model")
        .annotate(total=Sum("amount"))
        .order_by()
    }
    served_as = Coalesce(NullIf("model_served", Value("")), "model_requested")
    units = {
        row["line_model"]: row
        for row in UsageRecord.objects.filter(
            account_id=account_id,
            settlement__created_at__gte=start,
            settlement__created_at__lt=end,
        )
        .annotate(line_model=served_as)
        .values("line_model")
        .annotate(requests=Count("pk"), **{c: Sum(c) for c in UNIT_COLUMNS})
        .order_by()
    }
    charge_lines = []
    for model in sorted(revenue):
        if not revenue[model]:
            continue
        counted = units.get(model, {})
        line: dict = {"kind": "usage", "model": model, "requests": counted.get("requests", 0)}
        for column in UNIT_COLUMNS:
            if counted.get(column) or column in _ALWAYS:
                line[column] = counted.get(column) or 0
        line["amount"] = -revenue[model]
        charge_lines.append(line)
    written_off = -(
        Entry.objects.filter(
            ledger_account__kind=LedgerAccount.Kind.OVERAGE,
            transaction__account_id=account_id,
            transaction__created_at__gte=start,
            transaction__created_at__lt=end,
        ).aggregate(s=Sum("amount"))["s"]
        or 0
    )
    if written_off:
        charge_lines.append({"kind": "overage_written_off", "amount": written_off})
    for row in (
        period.filter(amount__lt=0)
        .exclude(transaction__kind="charge")
        .values("transaction__kind")
        .annotate(n=Count("pk"), total=Sum("amount"))
    ):
        charge_lines.append(
            {"kind": row["transaction__kind"], "count": row["n"], "amount": row["total"]}
        )

    if sum(line["amount"] for line in charge_lines) != charges:
        raise LedgerError(f"charge lines of account {account_id} do not add up to {charges}")
    if sum(line["amount"] for line in credit_lines) != credits:
        raise LedgerError(f"credit lines of account {account_id} do not add up to {credits}")
    return {
        "account_id": account_id,
        "period_start": period_start,
        "period_end": period_end,
        "opening": opening,
        "credits": credits,
        "charges": charges,
        "closing": opening + credits + charges,
        "charge_lines": charge_lines,
        "credit_lines": credit_lines,
    }


class MonthNotClosed(LedgerError):
    """A statement is stored once: one made before its month ends would be wrong."""


def month_closed(period_start: date) -> bool:
    """Whether the (UTC) month starting ``period_start`` has ended."""
    return period_start.replace(day=1) < datetime.now(UTC).date().replace(day=1)


def statement_generate(*, account_id: int, period_start: date) -> Statement:
    """Store the statement of a closed month (idempotent: a month is stored once).
    Raises MonthNotClosed for this month or a later one."""
    period_start = period_start.replace(day=1)
    if not month_closed(period_start):
        raise MonthNotClosed(f"{period_start:%Y-%m} has not ended; only a past month is stated.")
    existing = Statement.objects.filter(account_id=account_id, period_start=period_start).first()
    if existing is not None:
        return existing
    figures = statement_compute(account_id=account_id, period_start=period_start)
    try:
        with transaction.atomic():
            return Statement.objects.create(**figures)
    except IntegrityError:
        return Statement.objects.get(account_id=account_id, period_start=period_start)
