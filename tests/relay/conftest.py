from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
import redis
from django.conf import settings

from accounts.models import Account, ApiKey
from billing.models import PriceGroup
from relay.models import Channel
from tests.support.factories import AccountFactory, ApiKeyFactory, ChannelFactory, ModelPriceFactory
from tests.support.waiting import wait_for
from usage.models import UsageRecord


@dataclass
class RelayEnv:
    group: PriceGroup
    account: Account
    key: ApiKey
    channel: Channel
    url: str
    http: httpx.Client

    def post(self, body, *, key: str | None = None, headers=None, raw: bytes | None = None):
        hdrs = {"authorization": f"Bearer {key or self.key.secret}"}
        hdrs.update(headers or {})
        if raw is not None:
            return self.http.post("/v1/chat/completions", content=raw, headers=hdrs)
        return self.http.post("/v1/chat/completions", json=body, headers=hdrs)

    def refresh(self) -> Account:
        self.account.refresh_from_db()
        return self.account


@pytest.fixture
def relay_env(transactional_db, tollgate_server, upstream, celery_worker_thread):
    group = ModelPriceFactory(
        model="gpt-4o-mini", input_per_m=Decimal("0.15"), output_per_m=Decimal("0.60")
    ).group
    ModelPriceFactory(
        group=group,
        model="o4-mini",
        input_per_m=Decimal("1.10"),
        output_per_m=Decimal("4.40"),
        cache_read_per_m=Decimal("0.275"),
        reasoning_per_m=Decimal("8.80"),
    )
    account = AccountFactory(price_group=group, credit=5_000_000)
    key = ApiKeyFactory(account=account)
    channel = ChannelFactory(
        base_url=upstream.base_url,
        served_models=["gpt-4o-mini", "o4-mini"],
        api_key="sk-upstream-secret-abcdef123456",
    )
    with httpx.Client(base_url=tollgate_server.url, timeout=30) as http:
        yield RelayEnv(
            group=group,
            account=account,
            key=key,
            channel=channel,
            url=tollgate_server.url,
            http=http,
        )
    settle_in_flight()


def settle_in_flight() -> None:
    """Wait until the worker has finished every task of this test (nothing queued,
    nothing taken and unacknowledged) so the flush between tests cannot race a
    settlement transaction."""
    broker = redis.Redis.from_url(settings.REDIS_URL)
    wait_for(
        lambda: (
            broker.llen("celery") == 0
            and broker.hlen("unacked") == 0
            and not UsageRecord.objects.filter(settled_at__isnull=True).exists()
        )
    )


def chat(content: str = "Hello there", **extra):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}
