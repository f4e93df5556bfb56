"""Stored responses: what ``/v1/responses`` keeps for an account to come back to
(``StoredResponse``), read and written here.

Every read names the account: another account's response does not exist for it,
whatever its id. A response is found in one statement, by its unique id; keeping
one is one insert.
"""

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson
from django.apps import apps
from django.db import connection
from django.utils import timezone

if TYPE_CHECKING:
    from .models import StoredResponse


def _model() -> type["StoredResponse"]:
    # Through the app registry rather than an import: the Responses dialect keeps its
    # responses through here, and a dialect imports no provider, which ``relay.models``
    # does (a channel's types are the providers').
    return apps.get_model("relay", "StoredResponse")


# The longest response id kept.
MAX_ID = 200


def _storable(response_id: str) -> bool:
    # An id no row can hold (PostgreSQL text cannot hold NUL) names no response.
    return 0 < len(response_id) <= MAX_ID and "\x00" not in response_id


def stored_response_keep(
    *,
    response_id: str,
    account_id: int,
    channel_id: int,
    upstream: bool,
    previous: str = "",
    items: list[dict[str, Any]] | None = None,
    response: dict[str, Any] | None = None,
) -> None:
    """Keep a response: a pointer to the channel whose upstream keeps it
    (``upstream``), or its own turn: the input items its request gave, the response it
    continued (``previous``) and the response as answered. An id already kept stays
    as it was (the insert is skipped), so a row is never taken over; an id no row can
    hold is not kept."""
    if not _storable(response_id):
        return
    model = _model()
    model.objects.bulk_create(
        [
            model(
                response_id=response_id,
                account_id=account_id,
                channel_id=channel_id,
                upstream=upstream,
                previous=previous if _storable(previous) else "",
                items=items or [],
                response=response or {},
            )
        ],
        ignore_conflicts=True,
    )


# The longest conversation followed back; a chain is never longer unless made to loop.
MAX_TURNS = 10_000

_CHAIN_SQL = """
WITH RECURSIVE chain(response_id, previous, upstream, channel_id, items, response, turn) AS (
    SELECT response_id, previous, upstream, channel_id, items, response, 0
      FROM {table} WHERE response_id = %s AND account_id = %s
    UNION ALL
    SELECT r.response_id, r.previous, r.upstream, r.channel_id, r.items, r.response,
           c.turn + 1
      FROM {table} r JOIN chain c ON r.response_id = c.previous
     WHERE r.account_id = %s AND c.previous <> '' AND c.turn < %s
)
SELECT response_id, upstream, channel_id, items, response FROM chain ORDER BY turn DESC
"""


@dataclass(frozen=True, slots=True)
class Turn:
    response_id: str
    upstream: bool
    channel_id: int | None
    items: list[dict[str, Any]]
    response: dict[str, Any]


def stored_response_chain(*, response_id: str, account_id: int) -> list[Turn]:
    """The account's response of that id and those it continued, oldest first, in one
    statement (empty: the account has no response of that id). A turn deleted or
    expired ends the chain there, as it would upstream."""
    if not _storable(response_id):
        return []
    sql = _CHAIN_SQL.format(table=_model()._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(sql, [response_id, account_id, account_id, MAX_TURNS])
        rows = cursor.fetchall()
    return [
        Turn(
            response_id=rid,
            upstream=bool(upstream),
            channel_id=channel_id,
            items=_json(items, list),
            response=_json(response, dict),
        )
        for rid, upstream, channel_id, items, response in rows
    ]


def _json(value: Any, kind: type) -> Any:
    # PostgreSQL hands jsonb back decoded; SQLite hands back its text.
    if isinstance(value, str | bytes):
        value = orjson.loads(value)
    return value if isinstance(value, kind) else kind()


def stored_responses_expire(*, days: int, limit: int = 5000) -> int:
    """Delete the responses kept longer than ``days``; how many. In batches, so that a
    sweep never holds many rows at once."""
    model = _model()
    cutoff = timezone.now() - timedelta(days=days)
    total = 0
    while True:
        ids = list(model.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:limit])
        if not ids:
            return total
        total += model.objects.filter(pk__in=ids).delete()[0]


def stored_response_find(*, response_id: str, account_id: int) -> "StoredResponse | None":
    """The account's response of that id, or None."""
    if not _storable(response_id):
        return None
    return _model().objects.filter(response_id=response_id, account_id=account_id).first()


def stored_response_delete(*, response_id: str, account_id: int) -> bool:
    """Delete the account's response of that id; True if there was one."""
    if not _storable(response_id):
        return False
    deleted, _ = _model().objects.filter(response_id=response_id, account_id=account_id).delete()
    return deleted > 0
