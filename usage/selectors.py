"""Reads over usage records: the filtered log and its CSV export."""

import csv
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from itertools import islice
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Q, QuerySet

from core.money import micro_to_usd

from .models import UsageRecord


def usage_records(
    *,
    account_ids: Sequence[int] | None = None,
    key: int | None = None,
    model: str | None = None,
    status: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> QuerySet[UsageRecord]:
    """Usage records, newest first (``-created_at, -id``: stable for cursor paging).

    ``account_ids``: None for every account (staff), else only those accounts (an
    empty list gives nothing). ``key`` is an API key id. ``model`` matches the model
    asked for or the one that served it (``auto`` requests are found under both).
    ``start`` is inclusive and ``end`` exclusive."""
    records = UsageRecord.objects.select_related("api_key")
    if account_ids is not None:
        ids = list(account_ids)
        if not ids:
            return records.none()
        records = records.filter(account_id__in=ids)
    if key is not None:
        records = records.filter(api_key_id=key)
    if model:
        records = records.filter(Q(model_requested=model) | Q(model_served=model))
    if status:
        records = records.filter(status=status)
    if start is not None:
        records = records.filter(created_at__gte=start)
    if end is not None:
        records = records.filter(created_at__lt=end)
    return records.order_by("-created_at", "-id")


USAGE_CSV_COLUMNS = (
    "created_at",
    "request_id",
    "account_id",
    "api_key_id",
    "api_key_name",
    "endpoint",
    "model_requested",
    "model_served",
    "status",
    "http_status",
    "error_code",
    "stream",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "estimated",
    "cost_micro_usd",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "user",
)

_VALUES = (
    "created_at",
    "request_id",
    "account_id",
    "api_key_id",
    "api_key__name",
    "endpoint",
    "model_requested",
    "model_served",
    "status",
    "http_status",
    "error_code",
    "stream",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "estimated",
    "cost",
    "latency_ms",
    "ttft_ms",
    "user",
)

# A spreadsheet runs a cell that starts with one of these as a formula; request ids,
# model names and ``user`` come from API callers, so they are quoted as text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class _Line:
    """A file-like target for csv.writer that hands back each row it writes."""

    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def usage_csv_lines(*, queryset: QuerySet[UsageRecord], chunk_size: int = 2000) -> Iterator[str]:
    """The CSV export of ``queryset``: a header line, then one line per record.

    Rows are read in chunks with a server-side cursor, so memory stays flat however
    many records there are. Costs are given in micro-USD and as USD strings."""
    writer = csv.writer(_Line())
    cost_at = _VALUES.index("cost")
    yield writer.writerow(USAGE_CSV_COLUMNS)
    for row in queryset.values_list(*_VALUES).iterator(chunk_size=chunk_size):
        cells = [_cell(v) for v in row]
        cells.insert(cost_at + 1, micro_to_usd(row[cost_at]))
        yield writer.writerow(cells)


# Lines handed to the server at a time when streaming the export over ASGI.
_EXPORT_BATCH = 500


def usage_csv_stream(
    *, queryset: QuerySet[UsageRecord], asynchronous: bool
) -> Iterator[str] | AsyncIterator[str]:
    """The export as a response body. Under ASGI, Django would read a synchronous
    iterator to its end before sending a byte, so there it is served batch by batch
    from the request's thread (where its database connection lives)."""
    lines = usage_csv_lines(queryset=queryset)
    return _batches(lines) if asynchronous else lines


async def _batches(lines: Iterator[str]) -> AsyncIterator[str]:
    take = sync_to_async(lambda: "".join(islice(lines, _EXPORT_BATCH)), thread_sensitive=True)
    try:
        while chunk := await take():
            yield chunk
    finally:
        # Closes the server-side cursor when the client leaves early.
        await sync_to_async(lines.close, thread_sensitive=True)()  # type: ignore[attr-defined]
