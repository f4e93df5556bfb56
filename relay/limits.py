"""Per-key requests/tokens per minute and concurrency; per-account concurrency.

Requests and tokens per minute use GCRA (a token bucket kept as one timestamp): a
key may burst its whole minute's allowance, then is paced. Concurrency is a sorted
set of in-flight request ids (stale entries expire, so a crashed process cannot
leak slots). All checks and all updates happen in one Lua script: a request is
admitted by every limit or by none.

Tokens are charged at admission as the prompt estimate plus the completion
reserve, and the unused part is given back when the request finishes.

If Redis is unreachable, rate limits fail open. Money limits (balance, spend per
day and month) are enforced by the database and never do.
"""

import logging
import threading
import time
from dataclasses import dataclass, field

import redis
from django.conf import settings

from accounts.selectors import AuthKey
from core import shared

logger = logging.getLogger("tollgate.limits")

WINDOW_MS = 60_000
# An in-flight entry older than this is considered leaked and no longer counts.
STALE_MS = 15 * 60_000

_ADMIT = shared.Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, tpm, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local kc, ac, rid, stale = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local window = 60000

local function gcra(key, limit, n)
  local interval = window / limit
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + n * interval
  return new_tat - window <= now, new_tat, interval
end

local rpm_new, rpm_iv, tpm_new, tpm_iv = now, 1, now, 1
local reason, retry = '', 0
if rpm > 0 then
  local ok
  ok, rpm_new, rpm_iv = gcra(KEYS[1], rpm, 1)
  if not ok then reason = 'requests'; retry = rpm_new - window - now end
end
if reason == '' and tpm > 0 then
  local ok
  ok, tpm_new, tpm_iv = gcra(KEYS[2], tpm, cost)
  if not ok then
    reason = 'tokens'
    if cost > tpm then retry = -1 else retry = tpm_new - window - now end
  end
end
if reason == '' and kc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - stale)
  if redis.call('ZCARD', KEYS[3]) >= kc then reason = 'key_concurrency'; retry = 1000 end
end
if reason == '' and ac > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - stale)
  if redis.call('ZCARD', KEYS[4]) >= ac then reason = 'account_concurrency'; retry = 1000 end
end

local function left(new_tat, interval)
  return math.max(0, math.floor((window - (new_tat - now)) / interval))
end
if reason ~= '' then
  return {0, reason, math.ceil(retry), left(math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0')), rpm_iv), 0}
end
if rpm > 0 then
  redis.call('SET', KEYS[1], string.format('%.3f', rpm_new), 'PX', math.ceil(rpm_new - now) + 1000)
end
if tpm > 0 then
  redis.call('SET', KEYS[2], string.format('%.3f', tpm_new), 'PX', math.ceil(tpm_new - now) + 1000)
end
if kc > 0 then redis.call('ZADD', KEYS[3], now, rid); redis.call('PEXPIRE', KEYS[3], stale) end
if ac > 0 then redis.call('ZADD', KEYS[4], now, rid); redis.call('PEXPIRE', KEYS[4], stale) end
return {1, '', 0, left(rpm_new, rpm_iv), left(tpm_new, tpm_iv), math.ceil(rpm_new - now), math.ceil(tpm_new - now)}
"""
)

_RELEASE = shared.Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local refund, tpm, rid = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
if refund > 0 and tpm > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat > now then
    local new_tat = math.max(now, tat - refund * 60000 / tpm)
    redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
  end
end
redis.call('ZREM', KEYS[2], rid)
redis.call('ZREM', KEYS[3], rid)
return 1
"""
)


class RateLimited(Exception):
    def __init__(self, reason: str, retry_after_ms: int, headers: dict[str, str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_ms = retry_after_ms
        self.headers = headers


@dataclass(slots=True)
class Admission:
    """What a request took from its limits, to be given back when it finishes."""

    key_id: int
    account_id: int
    request_id: str
    tokens: int
    tpm: int
    concurrency: bool
    headers: dict[str, str] = field(default_factory=dict)


def _keys(key_id: int, account_id: int) -> list[str]:
    return [
        f"tg:rl:k{key_id}:rpm",
        f"tg:rl:k{key_id}:tpm",
        f"tg:rl:k{key_id}:conc",
        f"tg:rl:a{account_id}:conc",
    ]


def _duration(ms: int) -> str:
    return f"{max(ms, 0) / 1000:.3f}s"


def _headers(
    key: AuthKey, rpm_left: int, tpm_left: int, rpm_reset: int, tpm_reset: int
) -> dict[str, str]:
    headers = {}
    if key.rpm_limit:
        headers["x-ratelimit-limit-requests"] = str(key.rpm_limit)
        headers["x-ratelimit-remaining-requests"] = str(rpm_left)
        headers["x-ratelimit-reset-requests"] = _duration(rpm_reset)
    if key.tpm_limit:
        headers["x-ratelimit-limit-tokens"] = str(key.tpm_limit)
        headers["x-ratelimit-remaining-tokens"] = str(tpm_left)
        headers["x-ratelimit-reset-tokens"] = _duration(tpm_reset)
    return headers


def applies(key: AuthKey) -> bool:
    """Whether any rate or concurrency limit applies to requests with this key."""
    return bool(
        key.rpm_limit or key.tpm_limit or key.concurrency_limit or key.account_concurrency_limit
    )


class RedisLimits:
    """Limits shared by every web process: one Lua script each way. Raises
    ``redis.RedisError`` while Redis is unreachable (the caller fails open)."""

    def admit(self, keys: list[str], args: list) -> list:
        return _ADMIT(keys, args)

    def release(self, keys: list[str], args: list) -> None:
        _RELEASE(keys, args)


def _backend() -> "RedisLimits | MemoryLimits":
    # Chosen by the configuration: the embedded run (no REDIS_URL) has one process,
    # whose memory holds its limits.
    return _redis if settings.REDIS_URL else _memory


def admit(*, key: AuthKey, request_id: str, tokens: int) -> Admission | None:
    """Take one request and ``tokens`` from the key's and account's limits.

    Returns None when no limit applies (or Redis is unreachable: rate limits fail
    open); raises RateLimited when one is exceeded."""
    if not applies(key):
        return None
    rpm = key.rpm_limit or 0
    tpm = key.tpm_limit or 0
    kc = key.concurrency_limit or 0
    ac = key.account_concurrency_limit or 0
    args = [rpm, tpm, tokens, kc, ac, request_id, STALE_MS]
    keys = _keys(key.id, key.account_id)
    try:
        result = _backend().admit(keys, args)
    except redis.RedisError as exc:
        shared.failed(exc)
        return None
    allowed, reason = int(result[0]), result[1]
    if isinstance(reason, bytes):
        reason = reason.decode()
    if not allowed:
        retry = int(result[2])
        headers = _headers(key, int(result[3]), 0, max(retry, 0), max(retry, 0))
        raise RateLimited(reason, retry, headers)
    return Admission(
        key_id=key.id,
        account_id=key.account_id,
        request_id=request_id,
        tokens=tokens,
        tpm=tpm,
        concurrency=bool(kc or ac),
        headers=_headers(key, int(result[3]), int(result[4]), int(result[5]), int(result[6])),
    )


def release(admission: Admission | None, *, tokens_used: int) -> None:
    """Give back the concurrency slots and the tokens reserved but not used."""
    if admission is None:
        return
    refund = max(0, admission.tokens - tokens_used) if admission.tpm else 0
    if not (refund or admission.concurrency):
        return
    keys = _keys(admission.key_id, admission.account_id)
    try:
        _backend().release(
            [keys[1], keys[2], keys[3]], [refund, admission.tpm, admission.request_id]
        )
    except redis.RedisError as exc:
        shared.failed(exc)


class MemoryLimits:
    """The same algorithms in process memory, for the embedded single-process run
    (tests/relay/test_limits.py drives both backends with one sequence)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tat: dict[str, float] = {}
        self._inflight: dict[str, dict[str, float]] = {}

    def _gcra(self, key: str, limit: int, n: int, now: float) -> tuple[bool, float, float]:
        interval = WINDOW_MS / limit
        tat = max(self._tat.get(key, 0.0), now)
        new_tat = tat + n * interval
        return new_tat - WINDOW_MS <= now, new_tat, interval

    def _busy(self, key: str, limit: int, now: float, stale: int) -> bool:
        entries = self._inflight.setdefault(key, {})
        for rid in [r for r, at in entries.items() if at < now - stale]:
            del entries[rid]
        return len(entries) >= limit

    def admit(self, keys: list[str], args: list) -> list:
        rpm, tpm, cost, kc, ac, rid, stale = args
        now = time.time() * 1000
        with self._lock:
            rpm_new, rpm_iv, tpm_new, tpm_iv = now, 1.0, now, 1.0
            reason, retry = "", 0.0
            if rpm:
                ok, rpm_new, rpm_iv = self._gcra(keys[0], rpm, 1, now)
                if not ok:
                    reason, retry = "requests", rpm_new - WINDOW_MS - now
            if not reason and tpm:
                ok, tpm_new, tpm_iv = self._gcra(keys[1], tpm, cost, now)
                if not ok:
                    reason = "tokens"
                    retry = -1 if cost > tpm else tpm_new - WINDOW_MS - now
            if not reason and kc and self._busy(keys[2], kc, now, stale):
                reason, retry = "key_concurrency", 1000
            if not reason and ac and self._busy(keys[3], ac, now, stale):
                reason, retry = "account_concurrency", 1000

            def left(new_tat: float, interval: float) -> int:
                return max(0, int((WINDOW_MS - (new_tat - now)) // interval))

            if reason:
                current = max(now, self._tat.get(keys[0], 0.0))
                return [0, reason, int(-(-retry // 1)), left(current, rpm_iv), 0]
            if rpm:
                self._tat[keys[0]] = rpm_new
            if tpm:
                self._tat[keys[1]] = tpm_new
            if kc:
                self._inflight[keys[2]][rid] = now
            if ac:
                self._inflight[keys[3]][rid] = now
            return [
                1,
                "",
                0,
                left(rpm_new, rpm_iv),
                left(tpm_new, tpm_iv),
                int(rpm_new - now),
                int(tpm_new - now),
            ]

    def release(self, keys: list[str], args: list) -> None:
        refund, tpm, rid = args
        now = time.time() * 1000
        with self._lock:
            if refund and tpm and self._tat.get(keys[0], 0.0) > now:
                self._tat[keys[0]] = max(now, self._tat[keys[0]] - refund * WINDOW_MS / tpm)
            self._inflight.get(keys[1], {}).pop(rid, None)
            self._inflight.get(keys[2], {}).pop(rid, None)


_redis = RedisLimits()
_memory = MemoryLimits()
