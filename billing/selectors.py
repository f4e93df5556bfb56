from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from core.localcache import TTLCache

from .models import Entry, LedgerAccount, ModelPrice, PriceGroup
from .pricing import Component, Price

# group id -> model -> price versions, newest first: [(effective_from, Price), ...]
PriceBook = dict[str, list[tuple[datetime, Price]]]

_price_cache: TTLCache[PriceBook] = TTLCache("prices", lambda: settings.TOLLGATE["PRICE_CACHE_TTL"])


def price_of(version: ModelPrice, multiplier: Decimal | None = None) -> Price:
    """A stored price version as the relay prices with it (its components, times the
    group's multiplier)."""
    if multiplier is None:
        multiplier = version.group.multiplier
    return Price(
        model=version.model,
        components=tuple(
            Component.of(
                c.unit,
                c.rate,
                above=c.above,
                size=c.size,
                quality=c.quality,
                tool=c.tool,
                service_tier=c.service_tier,
            )
            for c in version.components.all()
        ),
        multiplier=multiplier,
        price_id=version.pk,
        mode=version.mode,
    )


def _price_book_load(group_id: int) -> PriceBook:
    book: PriceBook = {}
    multiplier = PriceGroup.objects.filter(pk=group_id).values_list("multiplier", flat=True).first()
    versions = (
        ModelPrice.objects.filter(group_id=group_id)
        .prefetch_related("components")
        .order_by("model", "-effective_from")
    )
    for row in versions:
        price = price_of(row, multiplier if multiplier is not None else Decimal(1))
        book.setdefault(row.model, []).append((row.effective_from, price))
    return book


def price_book(*, group_id: int) -> PriceBook:
    return _price_cache.get_or_load(group_id, lambda: _price_book_load(group_id))


def price_book_cached(*, group_id: int) -> PriceBook | None:
    """The group's price book if this process has it cached (no loading)."""
    return _price_cache.peek(group_id)


def price_in_book(book: PriceBook, model: str, at: datetime | None = None) -> Price | None:
    """The price version in effect at ``at`` (now by default), or None if unpriced.

    Versions scheduled for later are in the cached book too, so a change takes
    effect exactly at its ``effective_from``."""
    versions = book.get(model)
    if not versions:
        return None
    at = at or timezone.now()
    for effective_from, price in versions:
        if effective_from <= at:
            return price
    return None


def prices_in_book(book: PriceBook) -> dict[str, Price]:
    now = timezone.now()
    result = {}
    for model in book:
        price = price_in_book(book, model, now)
        if price is not None:
            result[model] = price
    return result


def price_current(*, group_id: int, model: str, at: datetime | None = None) -> Price | None:
    return price_in_book(price_book(group_id=group_id), model, at)


def prices_current(*, group_id: int) -> dict[str, Price]:
    return prices_in_book(price_book(group_id=group_id))


def price_cache_invalidate(*, group_id: int | None = None) -> None:
    """The group's prices changed: every process reloads them."""
    _price_cache.changed(group_id)


def ledger_account_balance(*, ledger_account: LedgerAccount) -> int:
    return Entry.objects.filter(ledger_account=ledger_account).aggregate(s=Sum("amount"))["s"] or 0


# What a margin row is grouped by: the value's field and, for ids, the name to show.
_MARGIN_BY: dict[str, tuple[str, str | None]] = {
    "day": ("day", None),
    "model": ("model", None),
    "channel": ("channel_id", "channel__name"),
    "account": ("transaction__account_id", "transaction__account__name"),
}
MARGIN_BY = tuple(_MARGIN_BY)


def margin_report(
    *, by: str, start: datetime | None = None, end: datetime | None = None
) -> list[dict]:
    """Revenue, upstream cost and margin (micro-USD) per UTC day, model, channel or
    account, read from the ledger's usage postings. A transaction counts on the day
    (and in the window, ``start`` included, ``end`` excluded) it was posted, as in
    the statements. Rows per channel and account also carry its ``name``.

    Days come in order; the other rows by revenue, largest first."""
    field, label = _MARGIN_BY[by]
    entries = Entry.objects.filter(
        ledger_account__kind__in=[LedgerAccount.Kind.REVENUE, LedgerAccount.Kind.UPSTREAM_COST]
    )
    if start is not None:
        entries = entries.filter(transaction__created_at__gte=start)
    if end is not None:
        entries = entries.filter(transaction__created_at__lt=end)
    if by == "day":
        entries = entries.annotate(day=TruncDate("transaction__created_at", tzinfo=UTC))
    fields = [field] if label is None else [field, label]
    rows: dict = {}
    totals = entries.values(*fields, "ledger_account__kind").annotate(total=Sum("amount"))
    for row in totals.order_by():
        line = rows.get(row[field])
        if line is None:
            line = rows[row[field]] = {by: row[field], "revenue": 0, "cost": 0}
            if label is not None:
                line["name"] = row[label]
        if row["ledger_account__kind"] == LedgerAccount.Kind.REVENUE:
            line["revenue"] += row["total"]
        else:
            line["cost"] += row["total"]
    for line in rows.values():
        line["margin"] = line["revenue"] - line["cost"]
    if by == "day":
        return sorted(rows.values(), key=lambda line: line["day"])
    return sorted(rows.values(), key=lambda line: (-line["revenue"], str(line[by])))


def margin_window_start(*, days: int) -> datetime:
    """The start of the last ``days`` UTC days, today included."""
    first = datetime.now(UTC).date() - timedelta(days=days - 1)
    return datetime.combine(first, time.min, UTC)


def margin_days(*, days: int) -> list[dict]:
    """Each of the last ``days`` UTC days, oldest first, with the revenue, upstream cost
    and margin posted on it (zeros on a day with no postings)."""
    start = margin_window_start(days=days)
    posted: dict[date, dict] = {row["day"]: row for row in margin_report(by="day", start=start)}
    return [
        posted.get(day, {"day": day, "revenue": 0, "cost": 0, "margin": 0})
        for day in (start.date() + timedelta(days=i) for i in range(days))
    ]
