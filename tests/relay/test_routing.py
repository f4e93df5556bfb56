"""Several channels behind one model: priority, weights, failover, health, auto."""

import random
import time
from collections import Counter

import pytest
from django.core import mail

from accounts.models import Account
from relay import health
from relay.lifecycle.routing import route_order
from relay.models import Channel
from relay.selectors import ChannelInfo, channel_cache_invalidate
from relay.tasks import channels_probe
from tests.support.factories import ChannelFactory, ModelPriceFactory
from tests.support.relay import chat
from tests.support.waiting import wait_for
from usage.models import UsageRecord


def info(cid, priority=0, weight=1):
    return ChannelInfo(
        id=cid,
        name=str(cid),
        type="openai",
        base_url="",
        api_key="",
        models=frozenset(),
        model_mapping={},
        priority=priority,
        weight=weight,
        cost_prices={},
    )


def test_route_order_takes_priority_tiers_first_and_weights_inside_a_tier():
    rng = random.Random(7)
    channels = [info(1, 0, 1), info(2, 5, 3), info(3, 5, 1), info(4, 0, 1)]
    firsts = Counter(route_order(channels, rng)[0].id for _ in range(4000))
    assert set(firsts) == {2, 3}  # only the top tier ever comes first
    assert 2.6 < firsts[2] / firsts[3] < 3.4  # 3:1 weights
    for _ in range(50):
        order = [c.id for c in route_order(channels, rng)]
        assert set(order[:2]) == {2, 3} and set(order[2:]) == {1, 4}


def record_for(response) -> UsageRecord:
    rid = response.headers["x-request-id"]
    return wait_for(
        lambda: UsageRecord.objects.filter(request_id=rid, settled_at__isnull=False).first()
    )


@pytest.fixture
def three(relay_env, more_upstreams):
    """The relay env's channel disabled; three loopback channels for gpt-4o-mini instead."""
    Channel.objects.filter(pk=relay_env.channel.pk).update(status="disabled")
    a, b, c = more_upstreams
    channels = [
        ChannelFactory(name="a", base_url=a.base_url, priority=10, weight=1),
        ChannelFactory(name="b", base_url=b.base_url, priority=10, weight=1),
        ChannelFactory(name="c", base_url=c.base_url, priority=0, weight=1),
    ]
    channel_cache_invalidate()
    return channels, more_upstreams


def test_traffic_goes_to_the_top_tier_and_is_shared_by_weight(relay_env, three):
    (a, b, c), (fa, fb, fc) = three
    for _ in range(30):
        assert relay_env.post(chat()).status_code == 200
    assert fc.calls == 0
    assert fa.calls > 5 and fb.calls > 5 and fa.calls + fb.calls == 30


def test_failover_chain_is_recorded_and_bounded(relay_env, three, settings):
    (a, b, c), (fa, fb, fc) = three
    Channel.objects.filter(pk=b.pk).update(priority=5)
    channel_cache_invalidate()
    fa.then(status=500)
    fb.then(status=429)
    response = relay_env.post(chat())
    assert response.status_code == 200
    record = record_for(response)
    assert [(x["channel"], x["status"]) for x in record.attempts] == [
        (a.id, 500),
        (b.id, 429),
        (c.id, 200),
    ]
    assert record.channel_id == c.id

    # A fourth channel is never tried: attempts are bounded at three.
    d = ChannelFactory(name="d", base_url=fc.base_url, priority=-5)
    channel_cache_invalidate()
    fa.then(status=502)
    fb.then(status=503)
    fc.then(status=500).then(status=200)
    response = relay_env.post(chat())
    assert response.status_code == 502
    record = record_for(response)
    assert [x["channel"] for x in record.attempts] == [a.id, b.id, c.id]
    assert d.id not in [x["channel"] for x in record.attempts]
    assert record.cost_pico == 0


def test_nothing_is_retried_once_bytes_reached_the_client(relay_env, three):
    (a, b, c), (fa, fb, fc) = three
    Channel.objects.filter(pk=b.pk).update(priority=5)
    channel_cache_invalidate()
    fa.then(break_after=3)
    with relay_env.http.stream(
        "POST",
        "/v1/chat/completions",
        json=chat(stream=True),
        headers={"authorization": f"Bearer {relay_env.key.secret}"},
    ) as response:
        body = response.read()
    assert b'"upstream_error"' in body
    assert fb.calls == 0 and fc.calls == 0
    assert record_for(response).status == "interrupted"


def test_a_failing_channel_cools_down_and_is_probed_back(relay_env, three, settings):
    settings.TOLLGATE = {**settings.TOLLGATE, "HEALTH_FAILURES": 3, "HEALTH_COOLDOWN": 0.5}
    (a, b, c), (fa, fb, fc) = three
    Channel.objects.filter(pk=b.pk).update(status="disabled")
    channel_cache_invalidate()
    for _ in range(3):
        fa.then(status=503)
    for _ in range(3):
        assert relay_env.post(chat()).status_code == 200  # served by c after a fails

    # a is now out: no more traffic reaches it.
    before = fa.calls
    for _ in range(5):
        assert relay_env.post(chat()).status_code == 200
    assert fa.calls == before == 3
    channel = wait_for(lambda: Channel.objects.filter(pk=a.pk, cooling_until__isnull=False).first())
    assert channel.health == "cooling down"
    assert "upstream_failed" in channel.last_error

    # After the cool-down, the probe finds it healthy and brings it back.
    wait_for(lambda: health.available(health.cooling(), a.id) or None, timeout=3)
    assert channels_probe() == 1
    assert fa.probes == 1
    assert Channel.objects.get(pk=a.pk).cooling_until is None
    assert relay_env.post(chat()).status_code == 200
    assert fa.calls == 4


def test_a_probe_that_fails_cools_the_channel_down_for_longer(relay_env, three, settings):
    settings.TOLLGATE = {**settings.TOLLGATE, "HEALTH_FAILURES": 1, "HEALTH_COOLDOWN": 0.3}
    (a, b, c), (fa, fb, fc) = three
    Channel.objects.filter(pk=b.pk).update(status="disabled")
    channel_cache_invalidate()
    fa.then(status=500)
    relay_env.post(chat())
    wait_for(lambda: a.id in health.cooling() or None)
    wait_for(lambda: health.available(health.cooling(), a.id) or None, timeout=3)
    fa.probe_status = 500
    channels_probe()
    until, level = health.cooling()[a.id]
    assert level == 1 and not health.available(health.cooling(), a.id)


def test_upstream_refusing_our_key_disables_the_channel_and_tells_the_staff(
    relay_env, three, django_user_model
):
    django_user_model.objects.create_user("ops", "ops@example.com", "pw-123456", is_staff=True)
    (a, b, c), (fa, fb, fc) = three
    Channel.objects.filter(pk=b.pk).update(priority=5)
    channel_cache_invalidate()
    fa.then(status=401, message="Incorrect API key provided: sk-upstr****3456")

    response = relay_env.post(chat())

    assert response.status_code == 200  # failed over
    channel = wait_for(lambda: Channel.objects.filter(pk=a.pk, status="disabled").first())
    assert "401" in channel.disabled_reason
    message = wait_for(lambda: mail.outbox[-1] if mail.outbox else None)
    assert "ops@example.com" in message.to and channel.name in message.subject
    for _ in range(4):
        relay_env.post(chat())
    assert fa.calls == 1


def test_when_every_channel_is_out_the_model_is_unavailable(relay_env, three, settings):
    settings.TOLLGATE = {**settings.TOLLGATE, "HEALTH_FAILURES": 1, "HEALTH_COOLDOWN": 60}
    (a, b, c), (fa, fb, fc) = three
    fa.then(status=500)
    fb.then(status=500)
    fc.then(status=500)
    assert relay_env.post(chat()).status_code == 502
    response = relay_env.post(chat())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_channel_available"
    assert relay_env.refresh().balance == 5_000_000


@pytest.fixture
def auto_env(relay_env, more_upstreams):
    """Two models with different prices, each served by its own loopback channel."""
    Channel.objects.filter(pk=relay_env.channel.pk).update(status="disabled")
    fast, slow, _ = more_upstreams
    ModelPriceFactory(
        group=relay_env.group, model="big-model", input_per_m="5.00", output_per_m="20.00"
    )
    cheap = ChannelFactory(name="cheap", base_url=fast.base_url, served_models=["gpt-4o-mini"])
    big = ChannelFactory(name="big", base_url=slow.base_url, served_models=["big-model"])
    channel_cache_invalidate()
    return {"gpt-4o-mini": (cheap, fast), "big-model": (big, slow)}


def snapshot_rate(record, unit: str) -> str:
    return next(c["rate"] for c in record.price_snapshot["components"] if c["unit"] == unit)


def test_auto_picks_the_cheapest_model_and_bills_it(relay_env, auto_env):
    response = relay_env.post({**chat(), "model": "auto"})
    assert response.status_code == 200
    assert response.json()["model"] == "gpt-4o-mini"
    record = record_for(response)
    assert (record.model_requested, record.model_served) == ("auto", "gpt-4o-mini")
    assert record.price_snapshot["model"] == "gpt-4o-mini"
    assert snapshot_rate(record, "input") == "0.15"


def test_auto_ordered_list_falls_back_to_the_next_model_at_its_price(relay_env, auto_env):
    Account.objects.filter(pk=relay_env.account.pk).update(
        auto_strategy="ordered", auto_models=["big-model", "gpt-4o-mini"]
    )
    response = relay_env.post({**chat(), "model": "auto"})
    assert record_for(response).model_served == "big-model"

    auto_env["big-model"][1].then(status=500)
    response = relay_env.post({**chat(), "model": "auto"})
    record = record_for(response)
    assert record.model_served == "gpt-4o-mini"
    assert [a["model"] for a in record.attempts] == ["big-model", "gpt-4o-mini"]
    assert snapshot_rate(record, "input") == "0.15"


def test_auto_fastest_follows_the_moving_average_latency(relay_env, auto_env):
    Account.objects.filter(pk=relay_env.account.pk).update(auto_strategy="fastest")
    auto_env["gpt-4o-mini"][1].delay = 0.3
    for model in ("gpt-4o-mini", "big-model", "gpt-4o-mini", "big-model"):
        assert relay_env.post({**chat(), "model": model}).status_code == 200
    health.refresh()  # do not wait for the few-seconds latency snapshot to expire
    response = relay_env.post({**chat(), "model": "auto"})
    assert record_for(response).model_served == "big-model"


def test_auto_chooses_only_models_that_serve_the_endpoint(relay_env, auto_env):
    # The cheapest model of all is an embeddings model: a chat request must not get it,
    # an embeddings request must get nothing else.
    ModelPriceFactory(
        group=relay_env.group,
        model="text-embedding-3-small",
        input_per_m="0.02",
        output_per_m="0",
        mode="embedding",
    )
    ChannelFactory(
        name="embedder",
        base_url=auto_env["gpt-4o-mini"][1].base_url,
        served_models=["text-embedding-3-small"],
    )
    channel_cache_invalidate()
    chat_reply = relay_env.post({**chat(), "model": "auto"})
    assert record_for(chat_reply).model_served == "gpt-4o-mini"
    embedded = relay_env.http.post(
        "/v1/embeddings",
        json={"model": "auto", "input": "hello"},
        headers={"authorization": f"Bearer {relay_env.key.secret}"},
    )
    assert embedded.status_code == 200, embedded.text
    assert record_for(embedded).model_served == "text-embedding-3-small"
    models = relay_env.http.get(
        "/v1/models", headers={"authorization": f"Bearer {relay_env.key.secret}"}
    ).json()["data"]
    modes = {m["id"]: m["mode"] for m in models}
    assert modes["text-embedding-3-small"] == "embedding" and modes["gpt-4o-mini"] == "chat"


def test_auto_fastest_tries_a_model_it_has_no_figure_for(relay_env, auto_env):
    Account.objects.filter(pk=relay_env.account.pk).update(auto_strategy="fastest")
    assert relay_env.post({**chat(), "model": "gpt-4o-mini"}).status_code == 200
    health.refresh()
    response = relay_env.post({**chat(), "model": "auto"})
    assert record_for(response).model_served == "big-model"


def test_auto_respects_the_keys_allowed_models(relay_env, auto_env):
    from tests.support.factories import ApiKeyFactory

    key = ApiKeyFactory(account=relay_env.account, allowed_models=["big-model"])
    response = relay_env.post({**chat(), "model": "auto"}, key=key.secret)
    assert record_for(response).model_served == "big-model"


def test_the_redis_and_memory_health_backends_answer_one_sequence_alike(settings):
    """Channel health in Redis (every web process) and in memory (the embedded run,
    and the fallback while Redis is down) cool a channel down, keep it out, back
    off after a failed probe and bring it back at the same steps."""
    settings.TOLLGATE = {
        **settings.TOLLGATE,
        "HEALTH_FAILURES": 3,
        "HEALTH_WINDOW": 60,
        "HEALTH_COOLDOWN": 0.2,
        "HEALTH_COOLDOWN_MAX": 10,
    }

    def run(backend, channel_id):
        steps = []
        for _ in range(4):  # the third failure cools it down; the fourth finds it out
            steps.append(backend.failed(channel_id) is not None)
        steps.append(backend.cooling_state()[channel_id][1])  # level 0
        time.sleep(0.25)  # the cool-down is over: half-open
        steps.append(backend.failed(channel_id) is not None)  # the probe failed: longer
        steps.append(backend.cooling_state()[channel_id][1])  # level 1
        backend.recovered(channel_id)
        steps.append(channel_id in backend.cooling_state())
        return steps

    shared_steps = run(health.RedisHealth(), 901)
    memory_steps = run(health.MemoryHealth(), 901)
    assert shared_steps == memory_steps == [False, False, True, False, 0, True, 1, False]
