"""``GET /metrics``: what an operator's Prometheus sees after real traffic.

The counters belong to the server's process and outlive each test, so the request
figures are compared between a scrape before and one after; the database gauges are
the database's state, which each test starts empty.
"""

from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from billing.models import Hold
from billing.services import hold_reserve, settlement_run
from relay.models import Channel
from relay.providers.mock import upstream as mock
from relay.selectors import channel_cache_invalidate
from tests.support.factories import AccountFactory, ApiKeyFactory, ChannelFactory
from tests.support.relay import chat
from tests.support.waiting import wait_for
from usage.models import UsageRecord

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(http: httpx.Client) -> Samples:
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def settled(request_id: str) -> UsageRecord:
    return wait_for(
        lambda: UsageRecord.objects.filter(request_id=request_id, settled_at__isnull=False).first()
    )


def test_served_requests_show_their_counts_tokens_revenue_and_upstream_cost(relay_env, upstream):
    Channel.objects.filter(pk=relay_env.channel.pk).update(
        cost_prices={"o4-mini": {"input": "0.50", "output": "2.00"}}
    )
    channel_cache_invalidate()
    channel = str(relay_env.channel.pk)
    scripted = mock.completion({**chat(), "model": "o4-mini"})
    scripted["usage"] = {
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "prompt_tokens_details": {"cached_tokens": 400},
        "completion_tokens_details": {"reasoning_tokens": 300},
    }
    upstream.then(body=scripted)
    before = scrape(relay_env.http)

    first = relay_env.post({**chat(), "model": "o4-mini"})
    second = relay_env.post({**chat(), "model": "o4-mini"})

    assert first.status_code == second.status_code == 200
    records = [settled(r.headers["x-request-id"]) for r in (first, second)]
    after = scrape(relay_env.http)
    served = {"model": "o4-mini", "channel": channel, "status": "success", "code": "200"}
    assert delta(before, after, "tollgate_requests_total", **served) == 2
    # The scripted answer's tokens, plus the mock upstream's own for the second request.
    scripted_tokens = {"input": 600, "cache_read": 400, "output": 200, "reasoning": 300}
    for kind in ("input", "cache_read", "cache_write", "output", "reasoning"):
        expected = scripted_tokens.get(kind, 0) + getattr(records[1], f"{kind}_tokens")
        assert delta(before, after, "tollgate_tokens_total", model="o4-mini", kind=kind) == expected
    # 4290 micro-USD for the scripted answer (see test_chat), plus the second's cost:
    # what the clients were told and what the ledger charged.
    revenue = delta(before, after, "tollgate_revenue_micro_usd_total", model="o4-mini")
    assert records[0].cost_pico == 4290 * 10**6
    assert revenue == pytest.approx(sum(r.cost_pico for r in records) / 10**6, abs=1e-6)
    told = sum(Decimal(r.json()["usage"]["cost"]) * 1_000_000 for r in (first, second))
    assert revenue == pytest.approx(float(told), abs=1e-6)
    upstream_cost = delta(
        before, after, "tollgate_upstream_cost_micro_usd_total", model="o4-mini", channel=channel
    )
    owed = sum(r.upstream_cost_pico for r in records) / 10**6
    assert upstream_cost == pytest.approx(owed, abs=1e-6) and owed > 0
    latency = {"model": "o4-mini"}
    assert delta(before, after, "tollgate_request_duration_seconds_count", **latency) == 2
    assert delta(
        before, after, "tollgate_request_duration_seconds_sum", **latency
    ) == pytest.approx(sum(r.latency_ms for r in records) / 1000)


def test_a_stream_records_time_to_first_token_and_an_open_hold_while_in_flight(relay_env, upstream):
    upstream.then(chunk_delay=0.1)
    before = scrape(relay_env.http)
    assert value(before, "tollgate_holds_open") == 0

    with relay_env.http.stream(
        "POST",
        "/v1/chat/completions",
        json=chat(stream=True, mock={"reply": "one two three four five six"}),
        headers={"authorization": f"Bearer {relay_env.key.secret}"},
    ) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()
        next(chunks)
        during = scrape(relay_env.http)
        hold = Hold.objects.get(status=Hold.Status.OPEN)
        assert value(during, "tollgate_holds_open") == 1
        assert value(during, "tollgate_holds_open_micro_usd") == hold.amount
        assert value(during, "tollgate_holds_oldest_age_seconds") > 0
        for _ in chunks:
            pass

    record = settled(response.headers["x-request-id"])
    after = scrape(relay_env.http)
    assert record.status == "success" and record.ttft_ms is not None
    ttft = {"model": "gpt-4o-mini"}
    assert delta(before, after, "tollgate_time_to_first_token_seconds_count", **ttft) == 1
    assert delta(
        before, after, "tollgate_time_to_first_token_seconds_sum", **ttft
    ) == pytest.approx(record.ttft_ms / 1000)
    assert (value(after, "tollgate_holds_open"), value(after, "tollgate_holds_open_micro_usd")) == (
        0,
        0,
    )
    assert value(after, "tollgate_settlement_lag_seconds") == 0


def test_refused_requests_are_counted_by_status_without_the_callers_model_name(relay_env, upstream):
    poor = ApiKeyFactory(account=AccountFactory(price_group=relay_env.group, credit=1))
    before = scrape(relay_env.http)

    assert relay_env.post(chat(), key="sk-tg-not-a-real-key").status_code == 401
    assert relay_env.post(chat(temperature=5)).status_code == 400
    assert relay_env.post({**chat(), "model": "made-up-model-7f3a"}).status_code == 404
    assert relay_env.post(chat(), key=poor.secret).status_code == 403

    response = relay_env.http.get("/metrics")
    after = parse(response.text)
    rejected = {"endpoint": "chat.completions", "channel": "", "status": "rejected"}
    assert delta(before, after, "tollgate_requests_total", **rejected, code="401", model="") == 1
    assert delta(before, after, "tollgate_requests_total", **rejected, code="400", model="") == 1
    assert delta(before, after, "tollgate_requests_total", **rejected, code="404", model="") == 1
    assert (
        delta(before, after, "tollgate_requests_total", **rejected, code="403", model="gpt-4o-mini")
        == 1
    )
    for error in ("invalid_api_key", "invalid_request_error", "model_not_found"):
        assert delta(before, after, "tollgate_request_errors_total", error=error) == 1
    assert delta(before, after, "tollgate_request_errors_total", error="insufficient_balance") == 1
    assert upstream.calls == 0
    assert "made-up-model-7f3a" not in response.text


def test_failover_and_upstream_failures_are_counted_by_channel(relay_env, upstream, more_upstreams):
    backup_upstream = more_upstreams[0]
    primary = relay_env.channel
    Channel.objects.filter(pk=primary.pk).update(priority=10)
    backup = ChannelFactory(name="backup", base_url=backup_upstream.base_url, priority=0)
    channel_cache_invalidate()
    upstream.then(status=503)
    before = scrape(relay_env.http)

    served = relay_env.post(chat())
    assert served.status_code == 200
    upstream.then(status=500)
    backup_upstream.then(status=500)
    failed = relay_env.post(chat())
    assert failed.status_code == 502

    settled(served.headers["x-request-id"])
    settled(failed.headers["x-request-id"])
    after = scrape(relay_env.http)
    assert (
        delta(
            before,
            after,
            "tollgate_requests_total",
            model="gpt-4o-mini",
            channel=str(backup.pk),
            status="success",
        )
        == 1
    )
    assert (
        delta(
            before,
            after,
            "tollgate_requests_total",
            model="gpt-4o-mini",
            channel="",
            status="upstream_error",
            code="502",
        )
        == 1
    )
    assert delta(before, after, "tollgate_failovers_total", model="gpt-4o-mini") == 2
    assert delta(before, after, "tollgate_upstream_failures_total", channel=str(primary.pk)) == 2
    assert delta(before, after, "tollgate_upstream_failures_total", channel=str(backup.pk)) == 1
    names = {
        labels["channel"]: labels["name"]
        for (name, ls), _ in after.items()
        if name == "tollgate_channel_info"
        for labels in [dict(ls)]
    }
    assert names[str(backup.pk)] == "backup"


def test_settlement_lag_is_the_age_of_the_oldest_unsettled_record(relay_env):
    assert value(scrape(relay_env.http), "tollgate_settlement_lag_seconds") == 0
    # A finished request the settlement worker has not reached for a minute and a half.
    hold_id = hold_reserve(
        api_key_id=relay_env.key.pk,
        account_id=relay_env.account.pk,
        amount=2_000,
        request_id="lagging",
    )
    record = UsageRecord.objects.create(
        request_id="lagging",
        account=relay_env.account,
        api_key=relay_env.key,
        hold_id=hold_id,
        model_requested="gpt-4o-mini",
        model_served="gpt-4o-mini",
        status=UsageRecord.Status.SUCCESS,
        http_status=200,
        input_tokens=100,
        cost_pico=15_000_000,
    )
    UsageRecord.objects.filter(pk=record.pk).update(
        created_at=timezone.now() - timedelta(seconds=90)
    )

    behind = scrape(relay_env.http)
    assert 90 <= value(behind, "tollgate_settlement_lag_seconds") < 120
    assert value(behind, "tollgate_holds_open") == 1
    assert value(behind, "tollgate_holds_open_micro_usd") == 2_000

    assert settlement_run(usage_ids=[record.pk]) == 1
    caught_up = scrape(relay_env.http)
    assert value(caught_up, "tollgate_settlement_lag_seconds") == 0
    assert value(caught_up, "tollgate_holds_open") == 0
    assert value(caught_up, "tollgate_database_up") == 1


def test_metrics_are_refused_to_a_public_address_without_the_token(relay_env, settings):
    public = Client(REMOTE_ADDR="93.184.215.14")
    response = public.get("/metrics")
    assert response.status_code == 403
    assert b"tollgate_" not in response.content

    settings.TOLLGATE_METRICS_TOKEN = "metrics-token-0f9e8d7c"
    assert public.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 403
    allowed = public.get("/metrics", headers={"authorization": "Bearer metrics-token-0f9e8d7c"})
    assert allowed.status_code == 200
    assert "tollgate_settlement_lag_seconds" in allowed.content.decode()
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200

    # Through a reverse proxy on the same host every client arrives from loopback; the
    # forwarding header gives it away.
    proxied = relay_env.http.get("/metrics", headers={"x-forwarded-for": "198.51.100.7"})
    assert proxied.status_code == 403
