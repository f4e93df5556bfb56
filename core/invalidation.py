"""Cache invalidation across processes, through Redis publish/subscribe.

A change (a key revoked, a price published, a channel edited) is published on one
Redis channel once committed (named for the Redis database the deployment uses:
Redis hands a message to every subscriber on the server, whatever database each
selected, and two deployments sharing a server must not drop each other's caches);
every process that caches (``core.localcache``) listens on a thread of its own and
drops the named entry as the message arrives, so the change holds everywhere within
milliseconds instead of after a TTL. A listener that loses Redis drops everything it
caches when it is back (it may have missed messages meanwhile), and the TTLs bound
staleness during the outage.

Without ``REDIS_URL`` (the embedded run) there is one process and nothing to tell.
"""

import logging
import os
import threading
import time
from collections.abc import Hashable

import orjson
import redis
from django.conf import settings

from . import shared
from .localcache import cache_named, clear_all

logger = logging.getLogger("tollgate.cache")

CHANNEL = "tg:invalidate"
_started_in: int | None = None
_lock = threading.Lock()
# Set while a listener is subscribed (tests and the readiness of a new process).
subscribed = threading.Event()


def channel_of(conn: redis.Redis) -> str:
    """The channel of the deployment whose Redis database ``conn`` uses."""
    return f"{CHANNEL}:{conn.connection_pool.connection_kwargs.get('db', 0)}"


def publish(name: str, key: Hashable | None) -> None:
    """Tell every process that ``name``'s entry ``key`` (None: all) changed."""
    conn = shared.client()
    if conn is None:
        return
    try:
        conn.publish(channel_of(conn), orjson.dumps({"cache": name, "key": key}))
    except redis.RedisError as exc:
        # Other processes catch up within their TTL.
        shared.failed(exc)
    except TypeError:
        conn.publish(channel_of(conn), orjson.dumps({"cache": name, "key": None}))


def _apply(raw: bytes) -> None:
    try:
        message = orjson.loads(raw)
        cache = cache_named(message["cache"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return
    if cache is not None:
        key = message.get("key")
        cache.invalidate(tuple(key) if isinstance(key, list) else key)


def _listen(url: str) -> None:
    while True:
        try:
            conn = redis.Redis.from_url(url, socket_connect_timeout=2, health_check_interval=10)
            pubsub = conn.pubsub()
            pubsub.subscribe(channel_of(conn))
            while True:
                message = pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    # Whatever changed while this process was not listening is unknown.
                    clear_all()
                    subscribed.set()
                elif message["type"] == "message":
                    _apply(message["data"])
        except redis.RedisError as exc:
            if subscribed.is_set():
                logger.warning("cache invalidation lost Redis (%s); reconnecting", exc)
            subscribed.clear()
            time.sleep(1.0)
        except Exception:
            logger.exception("cache invalidation listener failed; restarting it")
            subscribed.clear()
            time.sleep(1.0)


def listening() -> None:
    """Make sure this process listens (a thread per process, started on first use;
    a forked child starts its own)."""
    global _started_in
    pid = os.getpid()
    if _started_in == pid or not settings.REDIS_URL:
        return
    with _lock:
        if _started_in == pid:
            return
        _started_in = pid
        subscribed.clear()
        threading.Thread(
            target=_listen, args=(settings.REDIS_URL,), name="tollgate-invalidation", daemon=True
        ).start()
