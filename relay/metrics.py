"""Prometheus metrics for operators, served at ``/metrics``.

Request counters and histograms are recorded where a request's outcome is known:
``relay_finish`` for every request that got a hold, ``relay_authorize`` for those
refused before one. Recording is in memory only (no database or Redis round trip).

Production serves the relay from several worker processes; with
``PROMETHEUS_MULTIPROC_DIR`` set, ``prometheus_client`` keeps each process's values
in memory-mapped files there and a scrape adds them up. The directory must be
emptied before the server starts (stale files of old processes would be counted
again). Without it (the embedded run, the tests) the values live in this process.

Figures that are the database's (settlement lag, open holds, channels) are read at
scrape time, one indexed query each, so every process reports the same truth.
"""

import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError
from django.db.models import Count, Min, Sum
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from billing.models import Hold
from core.money import PICO_PER_MICRO
from usage.models import UsageRecord

from .models import Channel

if TYPE_CHECKING:
    from core.money import Units

    from .errors import ApiError
    from .lifecycle.request import Outcome, RelayRequest

logger = logging.getLogger("tollgate.metrics")

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# Upstream answers take from tens of milliseconds (short completions, cached
# embeddings) to minutes (long reasoning streams).
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30)

# ``model`` is always a priced model (or ``auto``) or empty, never the raw string a
# client sent: a label per made-up model name would let any key grow the metrics
# without bound.
REQUESTS = Counter(
    "tollgate_requests",
    "Relayed requests by endpoint, model, channel (id; empty when no upstream was "
    "reached), outcome (success, cancelled, interrupted, upstream_error, failed, "
    "rejected) and HTTP status.",
    ["endpoint", "model", "channel", "status", "code"],
)
REQUEST_ERRORS = Counter(
    "tollgate_request_errors",
    "Requests that did not end in success, by endpoint and error code.",
    ["endpoint", "error"],
)
LATENCY = Histogram(
    "tollgate_request_duration_seconds",
    "Time from receiving a successful request to its end (the last byte of a stream).",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
TTFT = Histogram(
    "tollgate_time_to_first_token_seconds",
    "Time from receiving a streamed request to sending its first content to the client.",
    ["model"],
    buckets=_TTFT_BUCKETS,
)
TOKENS = Counter(
    "tollgate_tokens",
    "Billed tokens by model and kind (input, cache_read, cache_write, cache_write_1h, "
    "output, reasoning, audio_input, audio_output, image_input, image_output); the kinds "
    "are disjoint.",
    ["model", "kind"],
)
UNITS_BILLED = Counter(
    "tollgate_units",
    "Billed units other than tokens by model and unit (images, audio_seconds, characters, "
    "search_units, tool_calls).",
    ["model", "unit"],
)
REVENUE = Counter(
    "tollgate_revenue_micro_usd",
    "Micro-USD charged to customers for served requests (exact: fractions included).",
    ["model", "channel"],
)
UPSTREAM_COST = Counter(
    "tollgate_upstream_cost_micro_usd",
    "Micro-USD owed to upstream providers, at the channels' configured cost prices "
    "(exact: fractions included).",
    ["model", "channel"],
)
UPSTREAM_FAILURES = Counter(
    "tollgate_upstream_failures",
    "Upstream calls that failed before the first byte (the request then fails over when "
    "another channel is left) and streams the upstream broke off, by channel and error.",
    ["channel", "error"],
)
FAILOVERS = Counter(
    "tollgate_failovers",
    "Requests that were tried on more than one channel, by the model they were served as.",
    ["model"],
)

_TOKEN_KINDS = (
    "input",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "output",
    "reasoning",
    "audio_input",
    "audio_output",
    "image_input",
    "image_output",
)

# ``labels()`` checks and converts its arguments under a lock on every call (~3.5 us,
# about ten calls per request); the children it returns never change, so they are
# looked up here once per label set. Racing threads store the same child.
_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def _child(metric: Any, *values: str) -> Any:
    child = _children.get((metric, values))
    if child is None:
        child = _children[(metric, values)] = metric.labels(*values)
    return child


def request_finished(
    *,
    request: "RelayRequest",
    outcome: "Outcome",
    model: str,
    tokens: "Units",
    cost: int,
    upstream_cost: int,
) -> None:
    """Record a request that got a hold; ``tokens`` and the amounts (pico-USD) are what
    was billed."""
    channel = str(outcome.channel.id) if outcome.channel is not None else ""
    endpoint = request.dialect.name
    status = str(outcome.status)
    _child(REQUESTS, endpoint, model, channel, status, str(outcome.http_status)).inc()
    if status == UsageRecord.Status.SUCCESS:
        _child(LATENCY, model).observe(outcome.latency_ms / 1000)
    else:
        _child(REQUEST_ERRORS, endpoint, outcome.error_code or status).inc()
    if outcome.ttft_ms is not None:
        _child(TTFT, model).observe(outcome.ttft_ms / 1000)
    for kind in _TOKEN_KINDS:
        count = getattr(tokens, kind)
        if count:
            _child(TOKENS, model, kind).inc(count)
    for unit, count in (
        ("images", tokens.image_count),
        ("audio_seconds", tokens.audio_ms / 1000),
        ("characters", tokens.characters),
        ("search_units", tokens.search_units),
        ("tool_calls", tokens.tool_call_count),
    ):
        if count:
            _child(UNITS_BILLED, model, unit).inc(count)
    if cost:
        _child(REVENUE, model, channel).inc(cost / PICO_PER_MICRO)
    if upstream_cost:
        _child(UPSTREAM_COST, model, channel).inc(upstream_cost / PICO_PER_MICRO)
    for attempt in outcome.attempts:
        if attempt.get("error"):
            _child(UPSTREAM_FAILURES, str(attempt["channel"]), attempt["error"]).inc()
    if status == UsageRecord.Status.INTERRUPTED and channel:
        _child(UPSTREAM_FAILURES, channel, outcome.error_code or status).inc()
    if len(outcome.attempts) > 1:
        _child(FAILOVERS, model).inc()


def request_ended(*, endpoint: str, model: str, outcome: "Outcome") -> None:
    """Record a request that ended with no hold: refused (input, policy, limits,
    balance), or over before its hold was granted. ``model`` is empty unless the
    requested model was found priced."""
    status, code = str(outcome.status), str(outcome.http_status)
    _child(REQUESTS, endpoint, model, "", status, code).inc()
    _child(REQUEST_ERRORS, endpoint, outcome.error_code or status).inc()


def request_refused(*, endpoint: str, model: str, error: "ApiError") -> None:
    """Record a request refused before it was authenticated (or before its body was
    read: a wrong method, a body too large)."""
    _child(REQUESTS, endpoint, model, "", str(UsageRecord.Status.REJECTED), str(error.status)).inc()
    _child(REQUEST_ERRORS, endpoint, error.code or error.type).inc()


def route_answered(*, endpoint: str, http_status: int, error: "ApiError | None") -> None:
    """Record a call that is not relayed (a stored response read or deleted)."""
    status = UsageRecord.Status.SUCCESS if error is None else UsageRecord.Status.REJECTED
    if error is not None and error.status >= 500:
        status = UsageRecord.Status.FAILED
    _child(REQUESTS, endpoint, "", "", str(status), str(http_status)).inc()
    if error is not None:
        _child(REQUEST_ERRORS, endpoint, error.code or error.type).inc()


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            families = self._families()
        except DatabaseError as exc:
            # Once per scrape while the database is down: the error's kind is enough
            # (its text can carry a host name).
            logger.warning("metrics: the database could not be read (%s)", type(exc).__name__)
            yield GaugeMetricFamily(
                "tollgate_database_up", "Whether the scrape could read the database.", value=0
            )
            return
        yield GaugeMetricFamily(
            "tollgate_database_up", "Whether the scrape could read the database.", value=1
        )
        yield from families

    @staticmethod
    def _families() -> list[Metric]:
        now = timezone.now()
        # Both filters match a partial index (``usage_unsettled``, ``hold_open_by_age``):
        # the oldest unsettled record is the first index entry, and open holds are
        # bounded by the requests in flight.
        oldest = UsageRecord.objects.filter(settled_at__isnull=True).aggregate(
            oldest=Min("created_at")
        )["oldest"]
        holds = Hold.objects.filter(status=Hold.Status.OPEN).aggregate(
            count=Count("id"), total=Sum("amount"), oldest=Min("created_at")
        )
        channels = list(Channel.objects.values_list("id", "name", "type", "status"))

        def age(moment) -> float:
            return max(0.0, (now - moment).total_seconds()) if moment is not None else 0.0

        info = GaugeMetricFamily(
            "tollgate_channel_info",
            "Configured upstream channels (the ``channel`` label elsewhere is the id).",
            labels=["channel", "name", "type", "status"],
        )
        for channel_id, name, kind, status in channels:
            info.add_metric([str(channel_id), name, kind, status], 1)
        return [
            GaugeMetricFamily(
                "tollgate_settlement_lag_seconds",
                "Age of the oldest finished usage record not yet settled to the ledger "
                "(0 when everything is settled).",
                value=age(oldest),
            ),
            GaugeMetricFamily(
                "tollgate_holds_open", "Holds reserved and not yet resolved.", value=holds["count"]
            ),
            GaugeMetricFamily(
                "tollgate_holds_open_micro_usd",
                "Micro-USD reserved by open holds.",
                value=holds["total"] or 0,
            ),
            GaugeMetricFamily(
                "tollgate_holds_oldest_age_seconds",
                "Age of the oldest open hold (0 when none is open).",
                value=age(holds["oldest"]),
            ),
            info,
        ]


class _Forward(Collector):
    """This process's default registry (its counters plus process and GC figures)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def _scrape_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if MULTIPROCESS:
        MultiProcessCollector(registry)
    else:
        registry.register(_Forward())
    registry.register(DatabaseCollector())
    return registry


_registry = _scrape_registry()


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric and its content type."""
    return generate_latest(_registry), CONTENT_TYPE_LATEST
