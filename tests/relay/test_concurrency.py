"""Money under real concurrency: parallel HTTP requests and parallel database connections."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from celery.exceptions import Retry
from django.conf import settings
from django.db import connection

from billing.models import Carry, Hold, Transaction
from billing.services import HoldRefused, hold_reserve
from billing.tasks import usage_settle
from tests.support.factories import AccountFactory, ApiKeyFactory
from tests.support.relay import chat
from tests.support.waiting import wait_for
from usage.models import UsageRecord

N_REQUESTS = 24
AFFORDABLE = 7


def test_parallel_requests_against_a_small_balance_admit_exactly_what_it_covers(
    relay_env, upstream
):
    body = chat("How much can I afford?", max_tokens=1000)
    # Learn the hold for this exact body from one request on the well-funded account.
    probe = relay_env.post(body)
    assert probe.status_code == 200
    hold = Hold.objects.get(request_id=probe.headers["x-request-id"]).amount
    wait_for(lambda: not UsageRecord.objects.filter(settled_at__isnull=True).exists())
    upstream.reset()

    balance = AFFORDABLE * hold + hold // 2
    account = AccountFactory(price_group=relay_env.group, credit=balance)
    key = ApiKeyFactory(account=account)
    upstream.delay = 0.5  # every admitted request stays in flight while the others arrive
    barrier = threading.Barrier(N_REQUESTS)

    def call(i: int) -> httpx.Response:
        with httpx.Client(base_url=relay_env.url, timeout=30) as client:
            barrier.wait()
            return client.post(
                "/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {key.secret}", "x-request-id": f"race-{i}"},
            )

    with ThreadPoolExecutor(N_REQUESTS) as pool:
        responses = list(pool.map(call, range(N_REQUESTS)))

    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == AFFORDABLE, statuses
    assert statuses.count(403) == N_REQUESTS - AFFORDABLE
    assert all(
        r.json()["error"]["code"] == "insufficient_balance"
        for r in responses
        if r.status_code == 403
    )
    assert upstream.calls == AFFORDABLE
    assert Hold.objects.filter(account=account).count() == AFFORDABLE

    wait_for(
        lambda: (
            not UsageRecord.objects.filter(account=account, settled_at__isnull=True)
            .exclude(status="rejected")
            .exists()
        )
    )
    account.refresh_from_db()
    exact = sum(UsageRecord.objects.filter(account=account).values_list("cost_pico", flat=True))
    # Whole micro-USD were charged; what is left below one micro-USD is carried.
    carry = Carry.objects.get(account=account).pico
    charged = (exact - carry) // 1_000_000
    assert charged * 1_000_000 + carry == exact
    assert account.held == 0
    assert account.balance == balance - charged >= 0
    print(
        f"\noverdraft test: {N_REQUESTS} parallel requests, hold {hold} micro-USD, balance "
        f"{balance} -> admitted {statuses.count(200)}, refused {statuses.count(403)}, "
        f"charged {charged}, final balance {account.balance}"
    )


@pytest.mark.django_db(transaction=True)
def test_parallel_reservations_on_separate_connections_never_overdraw():
    from tests.support.factories import PriceGroupFactory

    account = AccountFactory(price_group=PriceGroupFactory(), credit=10_000)
    key = ApiKeyFactory(account=account)
    threads = 32
    barrier = threading.Barrier(threads)

    def reserve(i: int) -> bool:
        try:
            barrier.wait()
            hold_reserve(api_key_id=key.id, account_id=account.id, amount=700, request_id=f"r{i}")
            return True
        except HoldRefused as refused:
            assert refused.reason == HoldRefused.INSUFFICIENT_BALANCE
            return False
        finally:
            connection.close()

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(reserve, range(threads)))

    assert results.count(True) == 10_000 // 700  # 14
    account.refresh_from_db()
    assert (
        account.held
        == 14 * 700
        == sum(Hold.objects.filter(account=account).values_list("amount", flat=True))
    )
    assert account.balance == 10_000


def _one_finished_request(relay_env) -> UsageRecord:
    response = relay_env.post(chat())
    assert response.status_code == 200
    return wait_for(
        lambda: UsageRecord.objects.filter(
            request_id=response.headers["x-request-id"], settled_at__isnull=False
        ).first()
    )


def test_settlement_delivered_again_through_the_broker_charges_once(relay_env):
    record = _one_finished_request(relay_env)
    balance = relay_env.refresh().balance
    queue = redis.Redis.from_url(settings.REDIS_URL)

    for _ in range(3):
        usage_settle.delay(record.pk)
    wait_for(lambda: queue.llen("celery") == 0)
    time.sleep(0.5)  # let the worker finish the last message it took

    assert relay_env.refresh().balance == balance
    assert Transaction.objects.filter(kind="charge", account=relay_env.account).count() == 1
    record.refresh_from_db()
    assert record.settlement is not None


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_settlements_charge_once():
    from tests.support.factories import PriceGroupFactory

    account = AccountFactory(price_group=PriceGroupFactory(), credit=1_000_000)
    key = ApiKeyFactory(account=account)
    hold_id = hold_reserve(api_key_id=key.id, account_id=account.id, amount=5_000, request_id="dup")
    # A finished request whose settlement message is about to be delivered four times at once.
    record = UsageRecord.objects.create(
        request_id="dup",
        account=account,
        api_key=key,
        hold_id=hold_id,
        model_requested="m",
        status="success",
        http_status=200,
        output_tokens=100,
        cost_pico=1_234_000_000,
    )
    barrier = threading.Barrier(4)

    retried = []

    def deliver(_):
        barrier.wait()
        try:
            while True:
                try:
                    return usage_settle.apply(args=[record.pk], throw=True).get()
                except Retry:
                    # The row was busy with another delivery: the task asks to come
                    # back later instead of dropping the record.
                    retried.append(1)
                    time.sleep(0.05)
        finally:
            connection.close()

    with ThreadPoolExecutor(4) as pool:
        settled_counts = list(pool.map(deliver, range(4)))

    assert sorted(settled_counts) == [0, 0, 0, 1]
    assert Transaction.objects.filter(kind="charge").count() == 1
    account.refresh_from_db()
    assert (account.balance, account.held) == (1_000_000 - 1_234, 0)
    print(f"\nduplicate settlement: 4 deliveries, {len(retried)} retried on a busy row, 1 charge")
    assert Hold.objects.get(pk=hold_id).status == Hold.Status.SETTLED
