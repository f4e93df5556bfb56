import functools
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

import orjson
from django.db import connection
from django.db.models import F

from core import adb
from core.sql import fetch_one
from core.threads import db

from .models import UNIT_COLUMNS, UsageDaily, UsageRecord

# The columns the relay writes for each request (the id and ``created_at`` come from
# the database).
_INSERT_FIELDS = [
    f for f in UsageRecord._meta.concrete_fields if f.attname not in ("id", "created_at")
]
_insert_sql: dict[str, str] = {}


def _insert_statement(vendor: str | None = None) -> str:
    vendor = vendor or connection.vendor
    if vendor not in _insert_sql:
        quote = connection.ops.quote_name
        columns = ", ".join(quote(f.column) for f in _INSERT_FIELDS)
        marks = ", ".join(["%s"] * len(_INSERT_FIELDS))
        _insert_sql[vendor] = (
            f"INSERT INTO {quote(UsageRecord._meta.db_table)} ({columns}) "  # noqa: S608
            f"VALUES ({marks}) RETURNING id"
        )
    return _insert_sql[vendor]


def usage_record_finish(**fields: Any) -> int:
    """Write the record of a request that reached the hold. Returns the record's id;
    the caller asks for its settlement.

    One prepared INSERT: this runs for every request, and the ORM's per-call work
    for a model this wide costs more than the database does. It commits durably:
    the record is what the customer is charged from."""
    params = [
        f.get_db_prep_save(
            fields[f.attname] if f.attname in fields else f.get_default(), connection
        )
        for f in _INSERT_FIELDS
    ]
    (usage_id,) = fetch_one(_insert_statement(), params)
    return usage_id


# (column, default) for each inserted column; the relay's fields are named after them.
_ASYNC_COLUMNS = [
    (f.column, f.get_default if f.has_default() else lambda: None) for f in _INSERT_FIELDS
]
assert all(f.column == f.attname for f in _INSERT_FIELDS)


async def usage_record_finish_async(**fields: Any) -> int:
    """``usage_record_finish`` for the relay's event loop: on PostgreSQL, written
    with the records of other requests finishing at the same time (see
    ``_insert_group``) on the loop's own connection (``core.adb``); elsewhere the
    synchronous version on a database thread. A column the fields leave out takes
    its default (most of the units a request is billed in are zero)."""
    if not adb.enabled():
        return await db(usage_record_finish)(**fields)
    if fields.get("hold_id") is None:
        raise ValueError("the relay's usage records have a hold")
    return await adb.grouped("usage", fields, _insert_group)


@functools.cache
def _insert_group_statement() -> str:
    quote = connection.ops.quote_name
    table = quote(UsageRecord._meta.db_table)
    columns = ", ".join(quote(f.column) for f in _INSERT_FIELDS)
    # The columns' defaults as a row of the table's type: what a record leaves out.
    # Sent with the statement once (it is prepared), not with every record.
    defaults = orjson.dumps({name: default() for name, default in _ASYNC_COLUMNS}).decode()
    assert "'" not in defaults
    return (
        f"INSERT INTO {table} ({columns}) SELECT {columns} "  # noqa: S608
        f"FROM json_populate_recordset(json_populate_record(NULL::{table}, '{defaults}'::json), "
        "%s::json) RETURNING id, hold_id"
    )


async def _insert_group(records: list[dict[str, Any]]) -> list[int]:
    """Insert a group of records with one statement and one commit; their ids.

    The group goes as one JSON array that PostgreSQL reads into the table's row type,
    each value through its column's type (a value too long for its column is refused
    as by a plain INSERT): one parameter, serialised by orjson, where adapting the
    records' values one by one was a large share of the web process's time. The
    statement is the same whatever the group's size, so it is prepared once."""
    rows = await adb.fetch_all(_insert_group_statement(), [orjson.dumps(records).decode()])
    ids = {hold_id: usage_id for usage_id, hold_id in rows}
    return [ids[r["hold_id"]] for r in records]


async def usage_record_for_hold_async(*, hold_id: int) -> int | None:
    """The id of the record written for this hold, if there is one."""
    if not adb.enabled():
        return await db(_usage_id_for_hold)(hold_id)
    row = await adb.fetch_one(
        f"SELECT id FROM {UsageRecord._meta.db_table} WHERE hold_id = %s",  # noqa: S608
        [hold_id],
    )
    return row[0] if row is not None else None


def _usage_id_for_hold(hold_id: int) -> int | None:
    return UsageRecord.objects.filter(hold_id=hold_id).values_list("pk", flat=True).first()


def usage_record_reject(**fields: Any) -> int:
    """Write the record of a request that ended with no money held for it (refused,
    or over before its hold). Returns its id. It charges nothing; settlement still
    takes it, to count it in the daily roll-up (the overview's requests and errors),
    and the caller asks for it."""
    fields.setdefault("status", UsageRecord.Status.REJECTED)
    return UsageRecord.objects.create(**fields).pk


_DAILY_SUMS = ("requests", "errors", *UNIT_COLUMNS, "cost_pico", "upstream_cost_pico")


def _by_text(item: tuple[tuple, list[int]]) -> str:
    # One order for every upsert batch: concurrent settlements take rows alike.
    return str(item[0])


class PostgresRollup:
    """One upsert per (day, account, key, model, channel), NULLs counted as equal."""

    def add(self, totals: dict[tuple, list[int]]) -> None:
        table = UsageDaily._meta.db_table
        columns = ", ".join(_DAILY_SUMS)
        updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in _DAILY_SUMS)
        placeholders = ", ".join(["%s"] * (5 + len(_DAILY_SUMS)))
        with connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {table} (day, account_id, api_key_id, model, channel_id, {columns}) "  # noqa: S608
                f"VALUES ({placeholders}) "
                "ON CONFLICT (day, account_id, api_key_id, model, channel_id) "
                f"DO UPDATE SET {updates}",
                [
                    (*dims, *sums)
                    for dims, sums in sorted(totals.items(), key=lambda kv: str(kv[0]))
                ],
            )


class PortableRollup:
    """The same sums by update-or-create, for SQLite: it has no NULLS NOT DISTINCT to
    upsert on, and serialises writers, so the read-then-write is safe there."""

    def add(self, totals: dict[tuple, list[int]]) -> None:
        for (day, account_id, key_id, model, channel_id), sums in totals.items():
            existing = UsageDaily.objects.filter(
                day=day,
                account_id=account_id,
                api_key_id=key_id,
                model=model,
                channel_id=channel_id,
            )
            if not existing.update(**{c: F(c) + v for c, v in zip(_DAILY_SUMS, sums, strict=True)}):
                UsageDaily.objects.create(
                    day=day,
                    account_id=account_id,
                    api_key_id=key_id,
                    model=model,
                    channel_id=channel_id,
                    **dict(zip(_DAILY_SUMS, sums, strict=True)),
                )


def rollup_backend() -> PostgresRollup | PortableRollup:
    """The roll-up for this process's database (tests/usage: one batch drives both)."""
    return _POSTGRES if connection.vendor == "postgresql" else _PORTABLE


_POSTGRES = PostgresRollup()
_PORTABLE = PortableRollup()


def usage_daily_add(*, records: Sequence[Mapping[str, Any]]) -> None:
    """Fold settled records into the daily roll-up (one row per day, account, key,
    model and channel). Runs inside the settlement's transaction."""
    totals: dict[tuple, list[int]] = {}
    for r in records:
        day = r["created_at"].astimezone(UTC).date()
        dims = (
            day,
            r["account_id"],
            r["api_key_id"],
            r["model_served"] or r["model_requested"],
            r["channel_id"],
        )
        row = totals.setdefault(dims, [0] * len(_DAILY_SUMS))
        row[0] += 1
        row[1] += r["status"] != UsageRecord.Status.SUCCESS
        for i, name in enumerate(_DAILY_SUMS[2:], start=2):
            row[i] += r[name]
    if totals:
        rollup_backend().add(totals)
