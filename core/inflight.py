"""Which holds belong to requests still in flight, where an operator's check sees them.

A hold is open while its request runs; a hold open for minutes whose request is no
longer running anywhere was left behind (a process killed mid-request, a usage
record that could not be written) and ``ledger_check`` reports it. Each web process
keeps the holds of its requests in flight in memory (no I/O per request) and a
thread of its own writes that set out every few seconds, with an expiry, so a
process that died stops vouching for its holds.

Two backends with one interface, chosen once at start-up: Redis (production: every
web process on every host) and files in ``TOLLGATE_STATE_DIR`` (the embedded run:
one process, and ``manage.py ledger_check`` run beside it).
"""

import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Protocol

import orjson
import redis
from django.conf import settings

from . import shared

logger = logging.getLogger("tollgate.inflight")

# How often each process writes its set out, and how long a written set stands for
# a process that stopped writing.
BEAT_SECONDS = 5.0
EXPIRES_SECONDS = 30

_holds: dict[int, float] = {}
_beating_in: int | None = None
_lock = threading.Lock()


class Backend(Protocol):
    def write(self, process: str, holds: list[int], expires: int) -> None: ...

    def read(self) -> set[int]:
        """The holds every live process vouches for; raises OSError or RedisError
        when that cannot be known."""
        ...


class RedisBackend:
    PREFIX = "tg:inflight:"

    def _client(self) -> redis.Redis:
        conn = shared.client()
        if conn is None:
            raise redis.ConnectionError("redis unavailable")
        return conn

    def write(self, process: str, holds: list[int], expires: int) -> None:
        self._client().set(self.PREFIX + process, orjson.dumps(holds), ex=expires)

    def read(self) -> set[int]:
        conn = self._client()
        keys = list(conn.scan_iter(match=self.PREFIX + "*", count=500))
        found: set[int] = set()
        for raw in conn.mget(keys) if keys else []:
            if raw is not None:
                found.update(orjson.loads(raw))
        return found


class FileBackend:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, process: str, holds: list[int], expires: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = orjson.dumps({"holds": holds, "expires": time.time() + expires})
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
        os.replace(tmp, self.directory / f"{process}.json")

    def read(self) -> set[int]:
        found: set[int] = set()
        if not self.directory.exists():
            return found
        now = time.time()
        for path in self.directory.glob("*.json"):
            try:
                data = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            if data.get("expires", 0) > now:
                found.update(data.get("holds", []))
            else:
                path.unlink(missing_ok=True)
        return found


def backend() -> Backend:
    if settings.REDIS_URL:
        return RedisBackend()
    return FileBackend(Path(settings.TOLLGATE_STATE_DIR) / "inflight")


def _process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _beat() -> None:
    store = backend()
    name = _process_name()
    while True:
        try:
            store.write(name, list(_holds), EXPIRES_SECONDS)
        except (OSError, redis.RedisError) as exc:
            logger.warning("the in-flight holds could not be written out (%s)", exc)
        time.sleep(BEAT_SECONDS)


def started(hold_id: int) -> None:
    """A request of this process holds ``hold_id`` until ``ended``."""
    global _beating_in
    _holds[hold_id] = time.monotonic()
    pid = os.getpid()
    if _beating_in != pid:
        with _lock:
            if _beating_in != pid:
                _beating_in = pid
                threading.Thread(target=_beat, name="tollgate-inflight", daemon=True).start()


def ended(hold_id: int) -> None:
    _holds.pop(hold_id, None)


def holds_in_flight() -> set[int] | None:
    """The holds of requests in flight on any live web process; None when that
    cannot be known (Redis unreachable)."""
    try:
        return backend().read()
    except (OSError, redis.RedisError):
        return None
