"""Synchronous database steps of the async views, run on worker threads."""

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection

P = ParamSpec("P")
T = TypeVar("T")


def db(fn: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """Run ``fn`` on a worker thread, which keeps its own persistent connection.

    Django only checks connection health at the start of a request on the request's
    own thread; these threads outlive requests, so a connection that broke (for
    instance a database restart) is dropped here and reopened on next use."""

    @wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            if connection.errors_occurred:
                connection.close_if_unusable_or_obsolete()

    return sync_to_async(run, thread_sensitive=False)
