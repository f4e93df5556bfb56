from datetime import datetime

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from config.localcache import TTLCache

from .models import Entry, LedgerAccount, ModelPrice
from .pricing import Price

# group id -> model -> price versions, newest first: [(effective_from, Price), ...]
PriceBook = dict[str, list[tuple[datetime, Price]]]

_price_cache: TTLCache[PriceBook] = TTLCache(lambda: settings.TOLLGATE["PRICE_CACHE_TTL"])


def _price_book_load(group_id: int) -> PriceBook:
    book: PriceBook = {}
    for row in ModelPrice.objects.filter(group_id=group_id).order_by("model", "-effective_from"):
        price = Price.from_decimals(
            model=row.model,
            input=row.input_per_m,
            output=row.output_per_m,
            cache_read=row.cache_read_per_m,
            cache_write=row.cache_write_per_m,
            reasoning=row.reasoning_per_m,
            request_fee=row.request_fee,
            price_id=row.pk,
        )
        book.setdefault(row.model, []).append((row.effective_from, price))
    return book


def price_book(*, group_id: int) -> PriceBook:
    return _price_cache.get_or_load(group_id, lambda: _price_book_load(group_id))


def price_current(*, group_id: int, model: str, at: datetime | None = None) -> Price | None:
    """The price version in effect at ``at`` (now by default), or None if unpriced.

    Versions scheduled for later are in the cached book too, so a change takes
    effect exactly at its ``effective_from``."""
    versions = price_book(group_id=group_id).get(model)
    if not versions:
        return None
    at = at or timezone.now()
    for effective_from, price in versions:
        if effective_from <= at:
            return price
    return None


def prices_current(*, group_id: int) -> dict[str, Price]:
    now = timezone.now()
    result = {}
    for model in price_book(group_id=group_id):
        price = price_current(group_id=group_id, model=model, at=now)
        if price is not None:
            result[model] = price
    return result


def price_cache_invalidate(*, group_id: int | None = None) -> None:
    _price_cache.invalidate(group_id)


def ledger_account_balance(*, ledger_account: LedgerAccount) -> int:
    return Entry.objects.filter(ledger_account=ledger_account).aggregate(s=Sum("amount"))["s"] or 0
