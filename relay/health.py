"""Channel health, shared by every web process through Redis.

A channel that fails ``HEALTH_FAILURES`` times within ``HEALTH_WINDOW`` seconds
cools down for ``HEALTH_COOLDOWN`` seconds and gets no traffic. When the cool-down
is over the channel is half-open: the Celery beat probe (or the next request)
tries it; a success brings it back, a failure cools it down again for twice as
long (up to ``HEALTH_COOLDOWN_MAX``). The router reads a per-process snapshot that
is at most a second old.

Also kept here: a moving average of each model's latency, for ``model: "auto"``
with the fastest strategy.
"""

import threading
import time
import uuid

import redis
from django.conf import settings

from core import shared
from core.threads import spawn

COOLING_KEY = "tg:h:cooling"
LATENCY_KEY = "tg:lat"
_SNAPSHOT_SECONDS = 1.0
_LATENCY_SNAPSHOT_SECONDS = 1.0
# Errors that say something about the channel (not about the request).
HEALTH_ERRORS = frozenset(
    {
        "upstream_timeout",
        "upstream_unreachable",
        "upstream_failed",
        "upstream_rate_limited",
        "upstream_bad_response",
        "upstream_stream_failed",
        "upstream_empty_stream",
    }
)

_FAILED = shared.Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, member = ARGV[1], ARGV[2]
local threshold, window, base, cap = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local state = redis.call('HGET', KEYS[1], id)
if state then
  local sep = string.find(state, ':')
  local until_ms, level = tonumber(string.sub(state, 1, sep - 1)), tonumber(string.sub(state, sep + 1))
  if until_ms > now then return {0, until_ms} end
  level = level + 1
  until_ms = now + math.min(base * 2 ^ level, cap)
  redis.call('HSET', KEYS[1], id, string.format('%d:%d', until_ms, level))
  return {1, until_ms}
end
redis.call('ZADD', KEYS[2], now, member)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
redis.call('PEXPIRE', KEYS[2], window)
if redis.call('ZCARD', KEYS[2]) >= threshold then
  redis.call('DEL', KEYS[2])
  local until_ms = now + base
  redis.call('HSET', KEYS[1], id, string.format('%d:0', until_ms))
  return {1, until_ms}
end
return {0, 0}
"""
)


def _cfg(name: str) -> float:
    return float(settings.TOLLGATE[name])


class MemoryHealth:
    """Channel health in process memory: the embedded run, and every process's
    fallback while Redis is unreachable."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failures: dict[int, list[float]] = {}
        self.cooling: dict[int, tuple[float, int]] = {}
        self.latency: dict[str, float] = {}

    def failed(self, channel_id: int) -> float | None:
        now = time.time() * 1000
        with self.lock:
            state = self.cooling.get(channel_id)
            if state is not None:
                until, level = state
                if until > now:
                    return None
                level += 1
                until = now + min(
                    _cfg("HEALTH_COOLDOWN") * 1000 * 2**level, _cfg("HEALTH_COOLDOWN_MAX") * 1000
                )
                self.cooling[channel_id] = (until, level)
                return until
            window = _cfg("HEALTH_WINDOW") * 1000
            recent = [t for t in self.failures.get(channel_id, []) if t > now - window] + [now]
            if len(recent) >= _cfg("HEALTH_FAILURES"):
                self.failures.pop(channel_id, None)
                until = now + _cfg("HEALTH_COOLDOWN") * 1000
                self.cooling[channel_id] = (until, 0)
                return until
            self.failures[channel_id] = recent
            return None

    def recovered(self, channel_id: int) -> None:
        with self.lock:
            self.cooling.pop(channel_id, None)

    def cooling_state(self) -> dict[int, tuple[float, int]]:
        return dict(self.cooling)


class RedisHealth:
    """Channel health shared by every web process: failures counted and cool-downs
    kept in Redis by one Lua script. Raises ``redis.RedisError`` while Redis is
    unreachable (the caller falls back to this process's memory)."""

    def failed(self, channel_id: int) -> float | None:
        result = _FAILED(
            [COOLING_KEY, f"tg:h:fail:{channel_id}"],
            [
                channel_id,
                uuid.uuid4().hex,
                int(_cfg("HEALTH_FAILURES")),
                int(_cfg("HEALTH_WINDOW") * 1000),
                int(_cfg("HEALTH_COOLDOWN") * 1000),
                int(_cfg("HEALTH_COOLDOWN_MAX") * 1000),
            ],
        )
        return float(result[1]) if int(result[0]) else None

    def recovered(self, channel_id: int) -> None:
        conn = shared.client()
        if conn is None:
            raise redis.ConnectionError("redis unavailable")
        conn.hdel(COOLING_KEY, str(channel_id))

    def cooling_state(self) -> dict[int, tuple[float, int]]:
        conn = shared.client()
        if conn is None:
            raise redis.ConnectionError("redis unavailable")
        return _parse_cooling(conn.hgetall(COOLING_KEY))  # type: ignore[arg-type]


_local = MemoryHealth()
_shared = RedisHealth()
_snapshot: tuple[float, dict[int, tuple[float, int]]] = (0.0, {})
_latency_snapshot: tuple[float, dict[str, float]] = (0.0, {})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse_cooling(raw: dict) -> dict[int, tuple[float, int]]:
    result = {}
    for key, value in raw.items():
        until, _, level = _text(value).partition(":")
        result[int(key)] = (float(until), int(level or 0))
    return result


def cooling() -> dict[int, tuple[float, int]]:
    """Channels cooling down or half-open: id -> (until, epoch ms; backoff level)."""
    global _snapshot
    now = time.monotonic()
    if now - _snapshot[0] < _SNAPSHOT_SECONDS:
        return _snapshot[1]
    state = _local.cooling_state()
    if settings.REDIS_URL:
        try:
            state.update(_shared.cooling_state())
        except redis.RedisError as exc:
            if shared.client() is not None:
                shared.failed(exc)
    _snapshot = (now, state)
    return state


def cooling_cached() -> dict[int, tuple[float, int]] | None:
    """The snapshot ``cooling()`` would return, if it is fresh (no Redis call)."""
    taken, state = _snapshot
    return state if time.monotonic() - taken < _SNAPSHOT_SECONDS else None


def available(state: dict[int, tuple[float, int]], channel_id: int) -> bool:
    entry = state.get(channel_id)
    return entry is None or entry[0] <= time.time() * 1000


def channel_failed(channel_id: int) -> float | None:
    """Count a failure; returns the cool-down end (epoch ms) if the channel now cools down."""
    global _snapshot
    until = None
    if settings.REDIS_URL:
        try:
            until = _shared.failed(channel_id)
        except redis.RedisError as exc:
            if shared.client() is not None:
                shared.failed(exc)
            until = _local.failed(channel_id)
    else:
        until = _local.failed(channel_id)
    if until is not None:
        _snapshot = (0.0, {})
    return until


def channel_recovered(channel_id: int) -> bool:
    """Bring a cooling or half-open channel back. True if it was out."""
    global _snapshot
    if channel_id not in cooling():
        return False
    _local.recovered(channel_id)
    if settings.REDIS_URL:
        try:
            _shared.recovered(channel_id)
        except redis.RedisError as exc:
            if shared.client() is not None:
                shared.failed(exc)
    _snapshot = (0.0, {})
    return True


_pushed: dict[str, float] = {}

# Folds one process's average into the shared one: each web process pushes at most
# once a second per model, so a model that slows down moves the shared figure within
# a few seconds whichever process served it.
_LATENCY_FOLD = shared.Script(
    """
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
local value = tonumber(ARGV[2])
if old then value = old * 0.5 + value * 0.5 end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.1f', value))
return 1
"""
)


def latency_observed(model: str, ms: int) -> None:
    """Fold one latency sample into this process's moving average, and into the
    shared one at most once a second per model (not a Redis call per request), from
    a thread, so the relay's event loop never waits for it."""
    with _local.lock:
        old = _local.latency.get(model, float(ms))
        value = _local.latency[model] = old * 0.8 + ms * 0.2
    now = time.monotonic()
    if now - _pushed.get(model, 0.0) < 1.0:
        return
    _pushed[model] = now
    spawn(_latency_push, model, value)


def _latency_push(model: str, value: float) -> None:
    try:
        _LATENCY_FOLD([LATENCY_KEY], [model, f"{value:.1f}"])
    except redis.RedisError as exc:
        if shared.client() is not None:
            shared.failed(exc)


def latencies_cached() -> dict[str, float] | None:
    """The snapshot ``latencies()`` would return, if it is fresh (no Redis call)."""
    taken, values = _latency_snapshot
    return values if time.monotonic() - taken < _LATENCY_SNAPSHOT_SECONDS else None


def latencies() -> dict[str, float]:
    """Moving average latency (ms) per model, shared by every web process and at most
    a second old; this process's own figures stand in for models Redis has none of
    (or while Redis is unreachable)."""
    global _latency_snapshot
    now = time.monotonic()
    if now - _latency_snapshot[0] < _LATENCY_SNAPSHOT_SECONDS:
        return _latency_snapshot[1]
    values: dict[str, float] = dict(_local.latency)
    conn = shared.client()
    if conn is not None:
        try:
            raw: dict = conn.hgetall(LATENCY_KEY)  # type: ignore[assignment]
            values.update({_text(k): float(v) for k, v in raw.items()})
        except redis.RedisError as exc:
            shared.failed(exc)
    _latency_snapshot = (now, values)
    return values


def refresh() -> None:
    """Drop the per-process snapshots so the next read goes to Redis."""
    global _snapshot, _latency_snapshot
    _snapshot = (0.0, {})
    _latency_snapshot = (0.0, {})


def reset_local() -> None:
    """Forget process-memory state (tests)."""
    with _local.lock:
        _local.failures.clear()
        _local.cooling.clear()
        _local.latency.clear()
    _pushed.clear()
    refresh()
