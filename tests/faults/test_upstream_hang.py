"""Upstreams that hang: one that never answers, one that sends its headers and then
nothing, one that stalls mid-stream. The caller hears back within the channel's
timeout, in the OpenAI error shape, and pays nothing for what was not delivered."""

import time

import orjson
import pytest

from billing.models import Hold
from billing.pricing import Price, token_components
from billing.reconcile import ledger_check
from core.money import Units
from relay.selectors import channel_cache_invalidate
from relay.tokens import count_messages, count_text
from tests.support.factories import ChannelFactory
from tests.support.relay import chat
from tests.support.stalling import StallingUpstream, chunk, http_chunk, json_headers, sse_headers
from tests.support.waiting import wait_for
from usage.models import UsageRecord

TIMEOUT = 0.5
CREDIT = 5_000_000
PRICE = Price.of(model="gpt-4o-mini", components=token_components(input="0.15", output="0.60"))


def prelude(kind: str, stream: bool) -> bytes:
    if kind == "never-answers":
        return b""
    return sse_headers() if stream else json_headers()


@pytest.fixture
def stalling():
    made: list[StallingUpstream] = []

    def make(prelude: bytes) -> StallingUpstream:
        made.append(StallingUpstream(prelude))
        return made[-1]

    yield make
    for upstream in made:
        upstream.close()


def post(env, body, stream: bool):
    started = time.monotonic()
    with env.http.stream(
        "POST",
        "/v1/chat/completions",
        json={**body, "stream": stream},
        headers={"authorization": f"Bearer {env.key.secret}"},
    ) as response:
        raw = response.read()
    return response, raw, time.monotonic() - started


def settled(response) -> UsageRecord:
    rid = response.headers["x-request-id"]
    return wait_for(
        lambda: UsageRecord.objects.filter(request_id=rid, settled_at__isnull=False).first()
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", ["never-answers", "headers-then-silence"])
def test_hanging_upstream_is_a_504_within_the_timeout_and_free(relay_env, stalling, kind, stream):
    hung = stalling(prelude(kind, stream))
    relay_env.channel.base_url = hung.base_url
    relay_env.channel.request_timeout = TIMEOUT
    relay_env.channel.save()
    channel_cache_invalidate()

    response, raw, elapsed = post(relay_env, chat(), stream)

    assert TIMEOUT <= elapsed < TIMEOUT + 1.0
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/json"
    error = orjson.loads(raw)["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_timeout")
    assert response.headers["x-request-id"] in error["message"]
    assert hung.base_url.split("//")[1] not in raw.decode()
    # The gateway hung up on the upstream rather than leaving the connection open.
    wait_for(lambda: hung.opened == hung.closed == 1)

    record = settled(response)
    assert (record.status, record.cost_pico, record.http_status) == ("upstream_error", 0, 504)
    assert Hold.objects.get(pk=record.hold_id).status == Hold.Status.RELEASED
    account = relay_env.refresh()
    assert (account.balance, account.held) == (CREDIT, 0)
    assert ledger_check() == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", ["never-answers", "headers-then-silence"])
def test_timeout_before_the_first_byte_fails_over_to_the_next_channel(
    relay_env, upstream, stalling, kind, stream
):
    hung = stalling(prelude(kind, stream))
    primary = ChannelFactory(
        base_url=hung.base_url,
        served_models=["gpt-4o-mini"],
        priority=relay_env.channel.priority + 10,
        request_timeout=TIMEOUT,
    )
    channel_cache_invalidate()

    response, raw, elapsed = post(relay_env, chat(), stream)

    assert response.status_code == 200
    assert elapsed < TIMEOUT + 1.0
    assert raw.rstrip().endswith(b"data: [DONE]") if stream else b'"choices"' in raw
    record = settled(response)
    assert [(a["channel"], a["status"], a.get("error")) for a in record.attempts] == [
        (primary.id, 504, "upstream_timeout"),
        (relay_env.channel.id, 200, None),
    ]
    assert record.channel_id == relay_env.channel.id and record.status == "success"
    assert upstream.calls == 1
    wait_for(lambda: hung.opened == hung.closed == 1)
    account = relay_env.refresh()
    assert (account.balance, account.held) == (CREDIT - record.cost_pico // 10**6, 0)
    assert ledger_check() == []


def test_stall_mid_stream_ends_with_an_error_event_and_bills_what_was_delivered(
    relay_env, upstream, stalling
):
    hung = stalling(sse_headers() + http_chunk(chunk("Hello")) + http_chunk(chunk(" there")))
    relay_env.channel.base_url = hung.base_url
    relay_env.channel.request_timeout = TIMEOUT
    relay_env.channel.save()
    channel_cache_invalidate()
    body = chat("Tell me something long")

    response, raw, elapsed = post(relay_env, body, True)

    assert response.status_code == 200
    assert TIMEOUT <= elapsed < TIMEOUT + 1.0
    events = [orjson.loads(e.removeprefix(b"data: ")) for e in raw.strip().split(b"\n\n")]
    assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == ["Hello", " there"]
    assert events[-1]["error"]["code"] == "upstream_timeout"
    assert b"[DONE]" not in raw
    wait_for(lambda: hung.opened == hung.closed == 1)

    record = settled(response)
    assert (record.status, record.estimated) == ("interrupted", True)
    tokens = Units(input=count_messages(body["messages"]), output=count_text("Hello there"))
    assert (record.input_tokens, record.output_tokens) == (tokens.input, tokens.output)
    assert record.cost_pico == PRICE.cost(tokens) > 0
    assert Hold.objects.get(pk=record.hold_id).status == Hold.Status.SETTLED
    account = relay_env.refresh()
    assert (account.balance, account.held) == (CREDIT - record.cost_pico // 10**6, 0)
    assert ledger_check() == []
