"""Synchronous database steps of the async views, run on worker threads."""

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from django.conf import settings
from django.db import connection

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


def db(fn: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """Run ``fn`` on a database thread.

    A plain ``run_in_executor``: the relay needs none of asgiref's thread-sensitive
    machinery, and skipping it is measurably cheaper per request. Django checks a
    connection's health only at the start of a request on the request's own thread;
    these threads outlive requests, so a connection that broke (a database restart)
    is dropped here and reopened on next use."""

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            if connection.errors_occurred:
                connection.close_if_unusable_or_obsolete()

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        # In the caller's context, so log lines written there carry the request id.
        context = contextvars.copy_context()
        return await loop.run_in_executor(
            _pool(), functools.partial(context.run, run, *args, **kwargs)
        )

    return call
