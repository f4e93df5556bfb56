"""One statement on the hot path, with its parameters bound by the server.

Django's psycopg backend binds parameters on the client (it quotes each value into
the SQL text), which is general but costs the web process time per value and makes
PostgreSQL parse and plan every statement afresh. The relay's two per-request
statements are always the same SQL, so they go through a server-binding cursor and
are prepared once per connection. Errors still arrive as Django's database errors."""

from collections.abc import Sequence
from typing import Any

from django.db import connection


def fetch_one(sql: str, params: Sequence[Any]) -> tuple:
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()
    import psycopg

    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        row = cursor.fetchone()
    assert row is not None
    return row
