"""The built-in mock channel refuses what it cannot do, as a real upstream would: a
400 naming the parameter, nothing charged, the hold released."""

import pytest

from billing.models import Hold
from relay.models import Channel
from relay.selectors import channel_cache_invalidate
from tests.support.factories import ChannelFactory, ModelPriceFactory
from tests.support.relay import chat, error_of
from tests.support.waiting import wait_for
from usage.models import UsageRecord


@pytest.fixture
def mock_env(relay_env):
    """The relay with its models served by the built-in mock channel only."""
    Channel.objects.filter(pk=relay_env.channel.pk).update(status=Channel.Status.DISABLED)
    ModelPriceFactory(group=relay_env.group, model="text-embedding-3-small")
    ChannelFactory(
        type="mock", base_url="", served_models=["gpt-4o-mini", "text-embedding-3-small"]
    )
    channel_cache_invalidate()
    return relay_env


def _nothing_charged(env, request_id: str) -> UsageRecord:
    record = wait_for(
        lambda: UsageRecord.objects.filter(request_id=request_id, settled_at__isnull=False).first()
    )
    assert record.cost_pico == 0
    assert not Hold.objects.filter(status=Hold.Status.OPEN).exists()
    assert env.refresh().held == 0
    return record


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"delay_ms": "soon"}, "mock.delay_ms"),
        ({"delay_ms": 10**9}, "mock.delay_ms"),
        ({"cached_tokens": -1}, "mock.cached_tokens"),
        ({"reasoning_tokens": 1.5}, "mock.reasoning_tokens"),
        ({"usage": "no"}, "mock.usage"),
        ({"fail_after": [1]}, "mock.fail_after"),
        ({"status": 200}, "mock.status"),
        ({"reply": {"text": "hi"}}, "mock.reply"),
        ({"speed": "fast"}, "mock.speed"),
        ("fast", "mock"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_wrongly_typed_mock_options_are_a_400_naming_them(mock_env, options, param, stream):
    request_id = f"mock-{param}-{stream}"
    response = mock_env.post(
        chat(mock=options, stream=stream), headers={"x-request-id": request_id}
    )
    error = error_of(response, 400)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert _nothing_charged(mock_env, request_id).status == "upstream_error"


def test_mock_embeddings_refuse_more_dimensions_than_any_model_has(mock_env):
    headers = {"authorization": f"Bearer {mock_env.key.secret}", "x-request-id": "dims"}
    body = {"model": "text-embedding-3-small", "input": "hello"}
    response = mock_env.http.post(
        "/v1/embeddings", json={**body, "dimensions": 2_000_000}, headers=headers
    )
    error = error_of(response, 400)
    assert error["param"] == "dimensions"
    _nothing_charged(mock_env, "dims")
    largest = mock_env.http.post(
        "/v1/embeddings",
        json={**body, "dimensions": 3072},
        headers={"authorization": f"Bearer {mock_env.key.secret}"},
    )
    assert largest.status_code == 200
    assert len(largest.json()["data"][0]["embedding"]) == 3072
