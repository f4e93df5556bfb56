"""A change made through one web process reaches every other within a second.

Two gateway processes share PostgreSQL and Redis, their caches set to keep keys,
prices and channels for ten minutes: only the invalidation through Redis can make
the second process see a change made through the first. Each change is made with
the management API on process A and watched for on process B.
"""

import time
from decimal import Decimal

import httpx
import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token

from tests.support.factories import (
    AccountFactory,
    ApiKeyFactory,
    ChannelFactory,
    ModelPriceFactory,
    UserFactory,
)
from tests.support.procs import Gateway, environment, test_database_url

WITHIN = 1.0


@pytest.fixture
def world(transactional_db, tmp_path):
    group = ModelPriceFactory(
        model="gpt-4o-mini", input_per_m=Decimal("0.15"), output_per_m=Decimal("0.60")
    ).group
    key = ApiKeyFactory(account=AccountFactory(price_group=group, credit=10_000_000))
    channel = ChannelFactory(type="mock", base_url="", served_models=["gpt-4o-mini"])
    staff = Token.objects.create(user=UserFactory(is_staff=True, is_superuser=True))
    env = environment(
        database_url=test_database_url(),
        redis_url=settings.REDIS_URL,
        TOLLGATE_AUTH_CACHE_TTL="600",
        TOLLGATE_PRICE_CACHE_TTL="600",
        TOLLGATE_CHANNEL_CACHE_TTL="600",
    )
    a = Gateway(env, tmp_path / "a.log").start()
    b = Gateway(env, tmp_path / "b.log").start()
    with (
        httpx.Client(base_url=a.url, timeout=10) as on_a,
        httpx.Client(base_url=b.url, timeout=10) as on_b,
    ):
        on_a.headers["authorization"] = f"Token {staff.key}"
        try:
            yield {"group": group, "key": key, "channel": channel, "a": on_a, "b": on_b}
        finally:
            a.stop()
            b.stop()


def _relay(client: httpx.Client, key, method: str, path: str) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    return client.request(
        method,
        path,
        headers={"authorization": f"Bearer {key.secret}"},
        json=body if method == "POST" else None,
    )


def _price(client: httpx.Client, key) -> str:
    models = _relay(client, key, "GET", "/v1/models").json()["data"]
    pricing = next(m["pricing"] for m in models if m["id"] == "gpt-4o-mini")
    return next(c["rate"] for c in pricing["components"] if c["unit"] == "input")


def _seen_within(check) -> float:
    """Seconds until ``check()`` held; fails after WITHIN seconds."""
    started = time.monotonic()
    while not check():
        elapsed = time.monotonic() - started
        assert elapsed < WITHIN, f"not seen within {WITHIN} s"
        time.sleep(0.02)
    return time.monotonic() - started


def test_a_price_published_on_one_process_applies_on_the_other(world):
    key, a, b = world["key"], world["a"], world["b"]
    assert _price(b, key) == "0.15"  # B has the price book cached
    published = a.post(
        "/api/prices/",
        json={
            "group": world["group"].pk,
            "model": "gpt-4o-mini",
            "components": [{"unit": "input", "rate": "2.50"}, {"unit": "output", "rate": "10"}],
        },
    )
    assert published.status_code == 201, published.text
    _seen_within(lambda: _price(b, key) == "2.50")
    # A request served by B right away is billed at the new price.
    answer = _relay(b, key, "POST", "/v1/chat/completions").json()
    usage = answer["usage"]
    expected = usage["prompt_tokens"] * 2_500_000 + usage["completion_tokens"] * 10_000_000
    assert Decimal(usage["cost"]) == Decimal(expected) / 10**12


def test_a_disabled_channel_gets_no_traffic_from_the_other_process(world):
    key, a, b = world["key"], world["a"], world["b"]
    assert _relay(b, key, "POST", "/v1/chat/completions").status_code == 200
    changed = a.patch(f"/api/channels/{world['channel'].pk}/", json={"status": "disabled"})
    assert changed.status_code == 200, changed.text
    _seen_within(lambda: _relay(b, key, "POST", "/v1/chat/completions").status_code == 503)
    a.patch(f"/api/channels/{world['channel'].pk}/", json={"status": "enabled"})
    _seen_within(lambda: _relay(b, key, "POST", "/v1/chat/completions").status_code == 200)


def test_a_revoked_key_is_refused_everywhere_within_a_second(world):
    key, a, b = world["key"], world["a"], world["b"]
    assert _relay(b, key, "GET", "/v1/models").status_code == 200  # cached on B
    revoked = a.post(f"/api/keys/{key.pk}/revoke/")
    assert revoked.status_code == 200, revoked.text
    _seen_within(lambda: _relay(b, key, "GET", "/v1/models").status_code == 401)
    assert _relay(b, key, "POST", "/v1/chat/completions").status_code == 401


def test_auto_fastest_shares_what_one_process_learns_about_a_slow_model(
    transactional_db, tmp_path, more_upstreams
):
    """Process A serves a model that has slowed down; process B, which has not seen
    it slow, stops choosing it for ``auto`` within a couple of seconds."""
    from accounts.models import Account

    fast_one, steady, _ = more_upstreams
    group = ModelPriceFactory(model="alpha").group
    ModelPriceFactory(group=group, model="beta")
    account = AccountFactory(price_group=group, credit=10_000_000)
    Account.objects.filter(pk=account.pk).update(auto_strategy="fastest")
    key = ApiKeyFactory(account=account)
    ChannelFactory(name="alpha", base_url=fast_one.base_url, served_models=["alpha"])
    ChannelFactory(name="beta", base_url=steady.base_url, served_models=["beta"])
    steady.delay = 0.05
    env = environment(database_url=test_database_url(), redis_url=settings.REDIS_URL)
    a = Gateway(env, tmp_path / "a.log").start()
    b = Gateway(env, tmp_path / "b.log").start()

    def ask(client: httpx.Client, model: str) -> str:
        response = client.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {key.secret}"},
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 200, response.text
        return response.json()["model"]

    try:
        with (
            httpx.Client(base_url=a.url, timeout=10) as on_a,
            httpx.Client(base_url=b.url, timeout=10) as on_b,
        ):
            for client in (on_a, on_b):
                ask(client, "alpha")
                ask(client, "beta")
            time.sleep(1.5)  # past the once-a-second push, and B's snapshot
            assert ask(on_b, "auto") == "alpha"
            fast_one.delay = 0.4  # alpha slows down; only A will see it
            for _ in range(3):
                ask(on_a, "alpha")
                time.sleep(1.05)
            time.sleep(1.2)  # B's snapshot of the shared figures is at most 1 s old
            # B's first choice already avoids alpha: it learnt from A, not from itself.
            assert ask(on_b, "auto") == "beta"
    finally:
        a.stop()
        b.stop()
