"""Probes for load balancers and orchestrators.

``/healthz`` answers while the process can serve at all and touches nothing else, so
a database outage does not get healthy web processes restarted. ``/readyz`` says
whether this process can do useful work: the database answers, and so does Redis
when one is configured. The relay itself keeps serving without Redis (limits open),
so a load balancer may keep routing to a process whose only failing check is Redis;
the check is there for operators and alerts."""

import time

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_redis() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    finally:
        client.close()


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, dict[str, object]] = {}
    probes = [("database", _check_database)]
    if settings.REDIS_URL:
        probes.append(("redis", _check_redis))
    for name, probe in probes:
        started = time.perf_counter()
        try:
            probe()
        except Exception as exc:  # any failure means not ready
            # The error's kind only: its text can carry a host name or a password.
            checks[name] = {"ok": False, "error": type(exc).__name__}
            if name == "database":
                connection.close_if_unusable_or_obsolete()
        else:
            checks[name] = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2)}
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )
