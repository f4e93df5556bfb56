"""Redis dies under load and comes back empty: the gateway keeps serving with its rate
limits open, every served request is recorded, and once Redis is back a real Celery
worker settles everything, exactly once."""

import collections
import time

import httpx
import pytest

from accounts.models import Account
from billing.models import Hold
from billing.reconcile import ledger_check
from tests.support.factories import AccountFactory, ApiKeyFactory, ChannelFactory, ModelPriceFactory
from tests.support.ledger import charged_for
from tests.support.load import Load, send
from tests.support.procs import Gateway, Worker, environment, test_database_url
from tests.support.waiting import wait_for
from usage.models import UsageRecord

CREDIT = 50_000_000


def upstream_calls(upstream, prefix: str) -> collections.Counter:
    markers = (
        r["json"]["messages"][0]["content"].removeprefix("marker ") for r in upstream.requests
    )
    return collections.Counter(m for m in markers if m.startswith(prefix))


@pytest.mark.django_db(transaction=True)
def test_redis_outage_under_load_fails_open_and_settlement_catches_up(
    upstream, private_redis, tmp_path
):
    group = ModelPriceFactory(model="gpt-4o-mini").group
    account = AccountFactory(price_group=group, credit=CREDIT)
    # A concurrency limit puts Redis on the path of every request of this key.
    key = ApiKeyFactory(account=account, concurrency_limit=100)
    tight = ApiKeyFactory(account=account, rpm_limit=2)
    ChannelFactory(base_url=upstream.base_url, served_models=["gpt-4o-mini"])
    env = environment(database_url=test_database_url(), redis_url=private_redis.url)
    gateway = Gateway(env, tmp_path / "gateway.log")
    worker = Worker(env, tmp_path / "worker.log")
    calls = iter(range(1000))

    def tight_statuses(n: int) -> list[int | None]:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            return [
                send(http, tight.secret, f"tight-{next(calls)}", stream=False).status
                for _ in range(n)
            ]

    try:
        gateway.start()
        worker.start()
        assert tight_statuses(3) == [200, 200, 429]  # Redis is up: the limit holds

        with Load(gateway.url, key.secret, prefix="load") as load:
            time.sleep(1.0)
            private_redis.kill()
            down = time.monotonic()
            time.sleep(0.5)
            during_outage = tight_statuses(4)
            time.sleep(2.5)
            waiting = UsageRecord.objects.filter(settled_at__isnull=True).count()
            private_redis.start()
            up = time.monotonic()
            time.sleep(3.0)
        after_recovery = tight_statuses(3)

        # Served throughout, rate limits open while Redis was away, back once it returned.
        assert during_outage == [200, 200, 200, 200]
        assert after_recovery == [200, 200, 429]
        assert [r for r in load.results if not r.completed] == []
        assert len(load.between(down, up)) >= 20
        assert max(r.elapsed for r in load.results) < 2.0
        # Settlement could not be asked for during the outage ...
        assert waiting > 0

        # ... and catches up with no manual step once Redis is back.
        wait_for(
            lambda: not UsageRecord.objects.filter(settled_at__isnull=True).exists(), timeout=45
        )
    finally:
        gateway.stop()
        worker.stop()

    # Each upstream call has exactly one usage record, and every answered request one.
    served = upstream_calls(upstream, "load-")
    records = collections.Counter(
        UsageRecord.objects.filter(request_id__startswith="load-").values_list(
            "request_id", flat=True
        )
    )
    assert set(served.values()) == {1}
    assert records == served
    assert {r.request_id for r in load.results} <= set(records)

    account = Account.objects.get(pk=account.pk)
    charged = charged_for(account)
    assert (account.balance, account.held) == (CREDIT - charged, 0)
    assert not Hold.objects.filter(status="open").exists()
    assert ledger_check() == []
