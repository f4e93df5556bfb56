"""The relay's per-request SQL, run on the event loop.

Each relayed request makes two statements (reserve the hold, write the usage
record). Running them through Django means a hop to a worker thread and back for
each, and under load the web process spent more CPU handing work between threads
(queue wake-ups, the GIL changing hands, Django's per-thread connection lookups) than
the statements themselves cost. On PostgreSQL they run here instead, on async psycopg
connections owned by the event loop, prepared once per connection.

Under load the two statements are group-committed (``GroupCommit``): the holds, or
the usage records, that requests ask for while one such statement is running go
together in the next one. PostgreSQL then commits (and flushes its WAL) once per
group instead of once per request, and the web process makes one round trip for
all of them. A request alone still goes at once.

Everything else (the ORM, SQLite in the embedded mode, cache misses) still goes
through Django on ``core.threads``. Database errors are raised as Django's, so callers
handle one family of exceptions whichever path ran.
"""

import asyncio
import select
from collections.abc import Awaitable, Callable, Sequence
from types import SimpleNamespace
from typing import Any

import psycopg
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.db.utils import DatabaseErrorWrapper


def enabled() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


def _connection_params() -> dict[str, Any]:
    params = connections["default"].get_connection_params()
    # Django's adapters and cursor class are for its own connections; these use
    # psycopg's defaults and bind parameters on the server.
    params.pop("context", None)
    params.pop("cursor_factory", None)
    # Django turns server-side prepared statements off (``None``) for the sake of
    # connection poolers, and then psycopg ignores ``prepare=True`` too. These few
    # statements are the same on every request: prepared, PostgreSQL parses and
    # plans them once per connection.
    if params.get("prepare_threshold") is None:
        params["prepare_threshold"] = 0
    return params


# ``DatabaseErrorWrapper`` turns a psycopg exception into the Django exception of the
# same name; it only needs to know the driver module.
_errors = DatabaseErrorWrapper(SimpleNamespace(Database=psycopg, errors_occurred=False))


def has_input(conn: psycopg.Connection | psycopg.AsyncConnection) -> bool:
    """Whether an idle connection has something to read. It should not: that is its
    server going away (a restart sends each idle backend a FATAL and closes it), so
    the connection is dropped rather than failing the request that would use it."""
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


class _Pool:
    """Up to ``size`` autocommit connections for one event loop, each with one cursor
    that is used again for every statement (a new cursor per statement costs more
    than the statement's own client-side work). A connection that broke is dropped,
    so a restarted server costs the requests in flight, not the process."""

    def __init__(self, size: int) -> None:
        self.groups: dict[str, GroupCommit] = {}
        self._idle: list[psycopg.AsyncCursor] = []
        self._slots = asyncio.Semaphore(size)
        self._params = _connection_params()

    async def _take(self) -> psycopg.AsyncCursor:
        while self._idle:
            cursor = self._idle.pop()
            if not cursor.connection.closed and not has_input(cursor.connection):
                return cursor
            await cursor.connection.close()
        conn = await psycopg.AsyncConnection.connect(**self._params, autocommit=True)
        return conn.cursor()

    async def fetch_one(self, sql: str, params: Sequence[Any]) -> tuple | None:
        rows = await self.execute(sql, params, everything=False)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any], *, everything: bool) -> list[tuple]:
        async with self._slots:
            with _errors:
                cursor = await self._take()
                conn = cursor.connection
                try:
                    await cursor.execute(sql, params, prepare=True)
                    if everything:
                        rows = await cursor.fetchall()
                    else:
                        row = await cursor.fetchone()
                        rows = [row] if row is not None else []
                except BaseException:
                    # A statement that failed cleanly leaves the connection idle and
                    # reusable; a broken one, or one cancelled mid-statement, is not.
                    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                    if conn.broken or not idle:
                        await conn.close()
                    else:
                        self._idle.append(cursor)
                    raise
                self._idle.append(cursor)
                return rows

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for cursor in idle:
            await cursor.connection.close()


_pools: dict[asyncio.AbstractEventLoop, _Pool] = {}


def _pool() -> _Pool:
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        for old in [old for old in _pools if old.is_closed()]:
            del _pools[old]
        pool = _pools[loop] = _Pool(settings.TOLLGATE["DB_CONNECTIONS"])
    return pool


async def fetch_one(sql: str, params: Sequence[Any]) -> tuple | None:
    """Run one statement (``%s`` placeholders) in its own transaction; its first row."""
    return await _pool().fetch_one(sql, params)


async def fetch_all(sql: str, params: Sequence[Any]) -> list[tuple]:
    """Run one statement in its own transaction; all its rows."""
    return await _pool().execute(sql, params, everything=True)


class GroupCommit:
    """Items of one kind (a hold, a usage record) written by one statement per group.

    With nothing of its kind in flight an item goes at once, alone; items that arrive
    while a statement runs wait for it to end and then go together, up to ``limit``
    per statement. ``run`` writes a group and returns one result per item, in order.
    If a group's statement fails for a reason that is not the connection (one item's
    bad value fails the whole statement), each item is tried again alone, so only
    the item at fault fails. The statement runs in its own task, and ``submit``
    hands back the item's future rather than waiting on it: a caller that stops
    waiting (its client left) neither cancels the others' statement nor loses its
    own result, which its owner can still collect and act on."""

    def __init__(self, run: Callable[[list[Any]], Awaitable[list[Any]]], limit: int) -> None:
        self._run = run
        self._limit = limit
        self._waiting: list[tuple[Any, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    def submit(self, item: Any) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return future

    async def _drain(self) -> None:
        group: list[tuple[Any, asyncio.Future]] = []
        try:
            while self._waiting:
                group = self._waiting[: self._limit]
                del self._waiting[: self._limit]
                outcomes = await self._outcomes([item for item, _ in group])
                for (_, future), outcome in zip(group, outcomes, strict=True):
                    if future.done():
                        continue  # cancelled by its caller, who wants no result
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            # Only when the loop is shutting down are items left here.
            for _, future in group + self._waiting:
                if not future.done():
                    future.cancel()
            self._waiting = []
            self._task = None

    async def _outcomes(self, items: list[Any]) -> list[Any]:
        try:
            return await self._run(items)
        except (OperationalError, InterfaceError) as exc:
            return [exc] * len(items)
        except DatabaseError as exc:
            if len(items) == 1:
                return [exc]
        except Exception as exc:
            return [exc] * len(items)
        outcomes: list[Any] = []
        for item in items:
            try:
                outcomes.extend(await self._run([item]))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes


def grouped(
    kind: str, item: Any, run: Callable[[list[Any]], Awaitable[list[Any]]], limit: int = 32
) -> asyncio.Future:
    """Write ``item`` with others of its ``kind`` (see ``GroupCommit``): the future of
    its result. Await it through ``asyncio.shield`` when the caller may be cancelled
    and the result must not be lost."""
    groups = _pool().groups
    group = groups.get(kind)
    if group is None:
        group = groups[kind] = GroupCommit(run, limit)
    return group.submit(item)


async def close() -> None:
    """Close this loop's connections; the ASGI server calls this at shutdown."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close()
