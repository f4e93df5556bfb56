"""Per-key and per-account limits: rates and concurrency in Redis, spend in the database."""

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.utils import timezone

from accounts.models import Account
from billing.models import Hold, KeySpend
from billing.services import HoldRefused
from billing.services.holds import PortableHolds, PostgresHolds
from billing.tasks import usage_settle_pending
from core import shared
from relay import limits
from tests.support.factories import AccountFactory, ApiKeyFactory, PriceGroupFactory
from tests.support.relay import chat
from tests.support.waiting import wait_for
from usage.models import UsageRecord


def parallel(env, key, n, body=None):
    barrier = threading.Barrier(n)

    def call(i):
        with httpx.Client(base_url=env.url, timeout=30) as client:
            barrier.wait()
            return client.post(
                "/v1/chat/completions",
                json=body or chat(),
                headers={"authorization": f"Bearer {key.secret}"},
            )

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(call, range(n)))


def settle_all():
    wait_for(lambda: not UsageRecord.objects.filter(settled_at__isnull=True).exists())


def test_requests_per_minute(relay_env, upstream):
    key = ApiKeyFactory(account=relay_env.account, rpm_limit=3)
    remaining = []
    for _ in range(3):
        response = relay_env.post(chat(), key=key.secret)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(response.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]

    refused = relay_env.post(chat(), key=key.secret)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert (
        15 <= int(refused.headers["retry-after"]) <= 20
    )  # one request per 20 s once the burst is spent
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert upstream.calls == 3
    settle_all()
    assert Hold.objects.filter(api_key=key).count() == 3
    # Another key of the same account is not affected.
    assert relay_env.post(chat()).status_code == 200


def test_tokens_per_minute_reserve_the_completion_and_refund_what_was_unused(relay_env, upstream):
    key = ApiKeyFactory(account=relay_env.account, tpm_limit=10_000)
    first = relay_env.post(chat(max_tokens=6000), key=key.secret)
    assert first.status_code == 200
    # Without the refund of the ~5,980 unused tokens this would not fit.
    second = relay_env.post(chat(max_tokens=6000), key=key.secret)
    assert second.status_code == 200, second.text
    assert int(second.headers["x-ratelimit-remaining-tokens"]) < 4000

    huge = relay_env.post(chat(max_tokens=20_000), key=key.secret)
    assert huge.status_code == 429
    assert "more tokens than" in huge.json()["error"]["message"]
    assert "retry-after" not in huge.headers


def test_concurrent_requests_per_key_and_slots_come_back(relay_env, upstream):
    key = ApiKeyFactory(account=relay_env.account, concurrency_limit=2)
    upstream.delay = 0.5
    statuses = sorted(r.status_code for r in parallel(relay_env, key, 5))
    assert statuses == [200, 200, 429, 429, 429]
    upstream.delay = 0
    assert [relay_env.post(chat(), key=key.secret).status_code for _ in range(3)] == [200, 200, 200]


def test_a_key_limited_to_one_request_at_a_time_can_send_one_after_another(relay_env):
    # Each answer gives its slot back before it reaches the caller.
    key = ApiKeyFactory(account=relay_env.account, concurrency_limit=1)
    statuses = [relay_env.post(chat(), key=key.secret).status_code for _ in range(20)]
    assert statuses == [200] * 20


def test_concurrent_requests_per_account_across_keys(relay_env, upstream):
    Account.objects.filter(pk=relay_env.account.pk).update(concurrency_limit=1)
    other = ApiKeyFactory(account=relay_env.account)
    upstream.delay = 0.5
    barrier = threading.Barrier(2)

    def call(secret):
        with httpx.Client(base_url=relay_env.url, timeout=30) as client:
            barrier.wait()
            return client.post(
                "/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {secret}"}
            )

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(call, [relay_env.key.secret, other.secret]))
    assert sorted(r.status_code for r in responses) == [200, 429]
    refused = next(r for r in responses if r.status_code == 429)
    assert "account" in refused.json()["error"]["message"]


def test_daily_spend_limit_holds_under_concurrency(relay_env, upstream):
    probe = relay_env.post(chat(max_tokens=500))
    hold = Hold.objects.get(request_id=probe.headers["x-request-id"]).amount
    settle_all()
    key = ApiKeyFactory(account=relay_env.account, daily_spend_limit=4 * hold + hold // 2)
    upstream.delay = 0.4
    responses = parallel(relay_env, key, 10, chat(max_tokens=500))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 4 + [429] * 6
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "spend_limit_exceeded"
    assert 0 < int(refused.headers["retry-after"]) <= 86_400
    settle_all()
    exact = sum(UsageRecord.objects.filter(api_key=key).values_list("cost_pico", flat=True))
    day = KeySpend.objects.get(api_key=key, period="day")
    # Spent in whole micro-USD: the exact cost, give or take what the account carried
    # into and out of these settlements (under one micro-USD each way).
    assert abs(day.spent * 1_000_000 - exact) < 1_000_000 and day.held == 0
    assert day.start == timezone.now().date()
    month = KeySpend.objects.get(api_key=key, period="month")
    assert (month.spent, month.held) == (day.spent, 0)


@pytest.mark.parametrize(
    "reserve",
    [PostgresHolds().reserve, PortableHolds.reserve],
    ids=["postgres-function", "portable"],
)
@pytest.mark.django_db(transaction=True)
def test_both_reservation_paths_apply_the_same_rules(reserve):
    account = AccountFactory(price_group=PriceGroupFactory(), credit=1_000)
    key = ApiKeyFactory(account=account, monthly_spend_limit=500)

    def attempt(amount, rid):
        try:
            result = reserve(
                api_key_id=key.id, account_id=account.id, amount=amount, request_id=rid
            )
        except HoldRefused as refused:
            return refused.reason
        return (
            "ok"
            if result > 0
            else {
                -1: "key_inactive",
                -2: "daily_spend_limit",
                -3: "monthly_spend_limit",
                -4: "account_suspended",
                -5: "insufficient_balance",
            }[result]
        )

    assert attempt(300, "a") == "ok"
    assert attempt(201, "b") == "monthly_spend_limit"
    assert attempt(200, "c") == "ok"
    account.refresh_from_db()
    assert account.held == 500  # the refused hold left nothing behind
    assert KeySpend.objects.get(api_key=key, period="month").held == 500
    assert not KeySpend.objects.filter(api_key=key, period="day").exists()
    assert Hold.objects.filter(api_key=key).exclude(spend_month=None).count() == 2
    key.monthly_spend_limit = None
    key.save()
    assert attempt(501, "d") == "insufficient_balance"
    key.status = "revoked"
    key.save()
    assert attempt(1, "e") == "key_inactive"


def test_rate_limits_fail_open_when_redis_is_down_but_money_checks_do_not(
    relay_env, upstream, settings
):
    key = ApiKeyFactory(account=relay_env.account, rpm_limit=1)
    working = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    assert [relay_env.post(chat(), key=key.secret).status_code for _ in range(3)] == [200, 200, 200]
    poor = ApiKeyFactory(account=AccountFactory(price_group=relay_env.group, credit=1))
    refused = relay_env.post(chat(), key=poor.secret)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_balance"

    # Settlement could not be requested meanwhile (the three served and the refusal,
    # which settlement only counts); the beat's sweep settles it all once Redis is back.
    assert UsageRecord.objects.filter(settled_at__isnull=True).count() == 4
    settings.REDIS_URL = working
    shared.reset()
    usage_settle_pending.delay()
    wait_for(lambda: not UsageRecord.objects.filter(settled_at__isnull=True).exists())
    assert relay_env.refresh().held == 0


def test_local_limiter_for_the_embedded_mode_follows_the_same_rules(settings):
    settings.REDIS_URL = ""
    from accounts.selectors import AuthKey

    key = AuthKey(
        id=99,
        account_id=98,
        price_group_id=1,
        name="k",
        active=True,
        account_active=True,
        expires_at=None,
        allowed_models=frozenset(),
        ip_allowlist=(),
        rpm_limit=2,
        tpm_limit=1000,
        concurrency_limit=1,
        daily_spend_limit=None,
        monthly_spend_limit=None,
        account_concurrency_limit=None,
        auto_strategy="cheapest",
        auto_models=(),
    )
    first = limits.admit(key=key, request_id="r1", tokens=600)
    with pytest.raises(limits.RateLimited) as exc:
        limits.admit(key=key, request_id="r2", tokens=10)
    assert exc.value.reason == "key_concurrency"
    limits.release(first, tokens_used=100)  # gives back the slot and 500 tokens
    second = limits.admit(key=key, request_id="r3", tokens=800)
    assert second is not None and second.headers["x-ratelimit-remaining-requests"] == "0"
    limits.release(second, tokens_used=800)
    with pytest.raises(limits.RateLimited) as exc:
        limits.admit(key=key, request_id="r4", tokens=1)
    assert exc.value.reason == "requests"


def test_the_redis_and_memory_limit_backends_answer_one_sequence_alike():
    """The production backend (Redis, one Lua script) and the embedded one (process
    memory) take the same admissions and releases to the same outcomes."""
    sequence = [
        # (request id, tokens) admitted, or ("release", request id, tokens unused)
        ("admit", "a", 300),
        ("admit", "b", 300),  # concurrency 2: refused until a slot is given back
        ("admit", "c", 100),
        ("release", "a", 200),
        ("admit", "d", 500),
        ("admit", "e", 400),  # over the token rate
        ("release", "b", 0),
        ("release", "d", 0),
        ("admit", "f", 50),
        ("admit", "g", 50),  # over the request rate
    ]

    def run(backend, prefix):
        keys = [f"{prefix}:rpm", f"{prefix}:tpm", f"{prefix}:kc", f"{prefix}:ac"]
        outcomes = []
        for step in sequence:
            if step[0] == "admit":
                _, rid, tokens = step
                result = backend.admit(keys, [4, 1000, tokens, 2, 0, rid, limits.STALE_MS])
                reason = result[1].decode() if isinstance(result[1], bytes) else result[1]
                outcomes.append((rid, int(result[0]), reason, int(result[3])))
            else:
                _, rid, refund = step
                backend.release(keys[1:], [refund, 1000, rid])
        return outcomes

    shared.reset()
    redis_outcomes = run(limits.RedisLimits(), "tg:test:equiv")
    memory_outcomes = run(limits.MemoryLimits(), "tg:test:equiv")
    assert redis_outcomes == memory_outcomes
    assert [o[2] for o in redis_outcomes] == [
        "",
        "",
        "key_concurrency",
        "",
        "tokens",
        "",
        "requests",
    ]
