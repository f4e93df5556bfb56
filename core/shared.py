"""Redis access for state shared by every web process: rate limits and channel health.

Calls are short and fail fast. After a Redis error, Redis is skipped for a couple of
seconds so an outage costs one timeout, not one per request; callers then fall
back (rate limits open, health in process memory). Without ``REDIS_URL`` (the
embedded default) everything runs in process memory.
"""

import logging
import threading
import time
from typing import Any

import redis
from django.conf import settings

logger = logging.getLogger("tollgate.shared")

_BACKOFF_SECONDS = 2.0
_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}
_down_until = 0.0


def client() -> redis.Redis | None:
    """The shared Redis client, or None when there is no Redis or it just failed."""
    url = settings.REDIS_URL
    if not url or time.monotonic() < _down_until:
        return None
    conn = _clients.get(url)
    if conn is None:
        with _lock:
            conn = _clients.get(url)
            if conn is None:
                conn = _clients[url] = redis.Redis.from_url(
                    url,
                    socket_timeout=0.25,
                    socket_connect_timeout=0.25,
                    health_check_interval=30,
                )
    return conn


class Skipped(redis.ConnectionError):
    """Redis was not asked: it failed a moment ago (see ``failed``)."""


def failed(exc: Exception) -> None:
    """Note a Redis failure: skip Redis for a moment. A call that was skipped is not
    a new failure: counting it would keep a busy process off Redis for good."""
    global _down_until
    if isinstance(exc, Skipped):
        return
    first = time.monotonic() >= _down_until
    _down_until = time.monotonic() + _BACKOFF_SECONDS
    if first:
        logger.warning("redis unavailable (%s); running without it for now", type(exc).__name__)


def reset() -> None:
    """Forget a past failure (tests, and a process that knows Redis is back)."""
    global _down_until
    _down_until = 0.0


class Script:
    """A Lua script run with EVALSHA (loaded on first use)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._scripts: dict[int, Any] = {}

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        conn = client()
        if conn is None:
            raise Skipped("redis unavailable")
        script = self._scripts.get(id(conn))
        if script is None:
            script = self._scripts[id(conn)] = conn.register_script(self.source)
        return script(keys=keys, args=args)
