"""Reads over usage records: the filtered log and its CSV export."""

import csv
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from itertools import islice
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.db.models import Q, QuerySet

from core.money import pico_to_usd

from .models import UNIT_COLUMNS, UsageRecord


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


# (CSV column, record value): every unit billed, then the cost exact in pico-USD
# and as a USD string.
_CSV = (
    ("created_at", "created_at"),
    ("request_id", "request_id"),
    ("account_id", "account_id"),
    ("api_key_id", "api_key_id"),
    ("api_key_name", "api_key__name"),
    ("endpoint", "endpoint"),
    ("model_requested", "model_requested"),
    ("model_served", "model_served"),
    ("status", "status"),
    ("http_status", "http_status"),
    ("error_code", "error_code"),
    ("stream", "stream"),
    *((c, c) for c in UNIT_COLUMNS if c != "audio_ms"),
    ("audio_seconds", "audio_ms"),
    ("unit_details", "unit_details"),
    ("estimated", "estimated"),
    ("cost_pico", "cost_pico"),
    ("cost_usd", "cost_pico"),
    ("latency_ms", "latency_ms"),
    ("ttft_ms", "ttft_ms"),
    ("user", "user"),
)
USAGE_CSV_COLUMNS = tuple(name for name, _ in _CSV)
_VALUES = tuple(dict.fromkeys(value for _, value in _CSV))
_FORMATS: dict[str, Any] = {
    "audio_seconds": lambda ms: f"{ms / 1000:g}",
    "unit_details": lambda d: orjson.dumps(d).decode() if d else "",
    "cost_usd": pico_to_usd,
}

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
    many records there are. Costs are given exactly, in pico-USD and as USD strings;
    audio in seconds; the breakdowns of images and tool calls as JSON."""
    writer = csv.writer(_Line())
    at = {value: i for i, value in enumerate(_VALUES)}
    plan = [(at[value], _FORMATS.get(name)) for name, value in _CSV]
    yield writer.writerow(USAGE_CSV_COLUMNS)
    for row in queryset.values_list(*_VALUES).iterator(chunk_size=chunk_size):
        yield writer.writerow([_cell(fmt(row[i]) if fmt else row[i]) for i, fmt in plan])


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
