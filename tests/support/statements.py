"""Counting the database statements a piece of code makes.

``statements()`` collects every statement run, through Django (on any thread) or
through ``core.adb`` (on the event loop), by code running in the current context
or in one copied from it: the tasks it starts and the work it hands to
``core.threads`` carry the context along. Work running elsewhere meanwhile (the
server's other requests, a Celery worker) is not counted.
"""

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db.backends import utils

from core import adb

_seen: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "statements_seen", default=None
)


def _note(sql: Any) -> None:
    seen = _seen.get()
    if seen is not None:
        seen.append(str(sql))


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL of each statement run inside the block, in order."""
    django_execute = utils.CursorWrapper._execute_with_wrappers
    adb_execute = adb._Pool.execute

    def counted_django(self, sql, params, many, executor):
        _note(sql)
        return django_execute(self, sql, params, many, executor)

    async def counted_adb(self, sql, params, *, everything):
        _note(sql)
        return await adb_execute(self, sql, params, everything=everything)

    seen: list[str] = []
    token = _seen.set(seen)
    utils.CursorWrapper._execute_with_wrappers = counted_django  # type: ignore[method-assign]
    adb._Pool.execute = counted_adb  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        utils.CursorWrapper._execute_with_wrappers = django_execute  # type: ignore[method-assign]
        adb._Pool.execute = adb_execute  # type: ignore[method-assign]
        _seen.reset(token)
