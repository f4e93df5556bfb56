"""Synchronous steps of the async views (the ORM, Redis), run on worker threads."""

import asyncio
import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import connection

from core import adb

logger = logging.getLogger("tollgate.relay")

P = ParamSpec("P")
T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    # Made on first use, after the server has forked its workers. Each thread keeps
    # one persistent database connection, so this also bounds the connections.
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(
            max_workers=settings.TOLLGATE["DB_THREADS"], thread_name_prefix="tollgate-db"
        )
    return _executor


def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    # Django checks a connection's health only at the start of a request on the
    # request's own thread; these threads outlive requests and may sit idle through a
    # database restart, so a connection that went away meanwhile is dropped before
    # use, and one that broke during use after it; either is reopened on next use.
    raw = connection.connection
    if raw is not None and connection.vendor == "postgresql" and adb.has_input(raw):
        connection.close()
    try:
        return fn(*args, **kwargs)
    finally:
        if connection.errors_occurred:
            connection.close_if_unusable_or_obsolete()


def db(fn: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """Run ``fn`` on a database thread.

    A plain ``run_in_executor``: the relay needs none of asgiref's thread-sensitive
    machinery, and skipping it is measurably cheaper per request."""

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        # In the caller's context, so log lines written there carry the request id.
        return await db_future(fn, *args, **kwargs)

    return call


def db_future(fn: Callable[..., T], *args: Any, **kwargs: Any) -> "asyncio.Future[T]":
    """Start ``fn`` on a database thread; the future of its result. Unlike awaiting
    ``db(fn)``, a caller that is cancelled while waiting can leave the future to be
    collected by someone else (the thread runs to its end either way)."""
    context = contextvars.copy_context()
    return asyncio.get_running_loop().run_in_executor(
        _pool(), functools.partial(context.run, _run, fn, *args, **kwargs)
    )


def drain() -> None:
    """Wait for everything started on the database threads (a process about to exit:
    the server may end it by signal, which would kill work still under way, such as a
    settlement ask made after a request's last record)."""
    global _executor
    executor, _executor = _executor, None
    if executor is not None:
        executor.shutdown(wait=True)


def _report(future: Future) -> None:
    exc = future.exception()
    if exc is not None:
        logger.error("background step failed", exc_info=exc)


def spawn(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run ``fn`` on a database thread and do not wait for it: side effects of a
    request (Redis bookkeeping, asking for settlement) that must not block the event
    loop and whose result nobody needs. Failures are logged."""
    context = contextvars.copy_context()
    _pool().submit(context.run, _run, fn, *args, **kwargs).add_done_callback(_report)
