"""The relay as its tests drive it: ``RelayEnv`` (what the ``relay_env`` fixture gives a
test), ``chat()`` bodies, ``settle_in_flight()``, ``error_of()`` to check an
OpenAI-shaped error and ``WEATHER``, a Messages API tool."""

from dataclasses import dataclass

import httpx
import redis
from django.conf import settings

from accounts.models import Account, ApiKey
from billing.models import PriceGroup
from relay.models import Channel
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


def error_of(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


# A Messages API tool, for the requests that carry one.
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
