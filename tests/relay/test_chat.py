"""Non-streaming chat completions through a loopback upstream, end to end."""

import contextlib

import httpx
import openai
import pytest

from billing.models import Entry, Hold, LedgerAccount, Transaction
from core.money import pico_to_usd
from relay.providers.mock import upstream as mock
from relay.tokens import count_messages
from tests.support.factories import ApiKeyFactory
from tests.support.relay import chat
from tests.support.waiting import wait_for
from usage.models import UsageRecord


def settled(request_id: str) -> UsageRecord:
    return wait_for(
        lambda: UsageRecord.objects.filter(request_id=request_id, settled_at__isnull=False).first()
    )


def test_answer_is_the_upstreams_with_normalised_usage_and_the_charge_is_booked(
    relay_env, upstream
):
    scripted = mock.completion(chat())
    scripted["usage"] = {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 1000},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    scripted["custom_upstream_field"] = {"kept": True}
    upstream.then(body=scripted)

    response = relay_env.post(chat(), headers={"x-request-id": "client-req-1"})

    assert response.status_code == 200
    assert response.headers["x-request-id"] == "client-req-1"
    body = response.json()
    usage = body.pop("usage")
    expected = dict(scripted)
    expected_usage = expected.pop("usage")
    assert body == expected  # everything but usage comes back exactly as the upstream sent it
    # 200 uncached input at $0.15/M, 1000 cache reads at the input price (no cache price
    # set), 300 output at $0.60/M: 30 + 150 + 180 = 360 micro-USD.
    assert usage["cost"] == "0.000360"
    assert usage["prompt_tokens"] == expected_usage["prompt_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 1000}
    # The wire names follow OpenAI: input_tokens counts every prompt token (cached
    # included, as prompt_tokens does); the breakdowns say which kind each is.
    assert (usage["input_tokens"], usage["cache_read_tokens"], usage["cache_write_tokens"]) == (
        1200,
        1000,
        0,
    )
    assert usage["input_tokens"] == usage["prompt_tokens"]
    assert (usage["output_tokens"], usage["reasoning_tokens"]) == (300, 0)

    record = settled("client-req-1")
    assert record.status == "success"
    assert record.api_key_id == relay_env.key.id
    assert record.channel_id == relay_env.channel.id
    assert record.model_requested == record.model_served == "gpt-4o-mini"
    assert record.cost_pico == 360 * 10**6
    # The price snapshot names every component billed, with its quantity and amount.
    # Cache reads have no rate of their own in this price: billed at the input rate.
    assert record.price_snapshot["components"] == [
        {"unit": "input", "rate": "0.15", "per": "1M tokens", "quantity": 200, "cost": "0.000030"},
        {
            "unit": "cache_read",
            "rate": "0.15",
            "per": "1M tokens",
            "rate_of": "input",
            "quantity": 1000,
            "cost": "0.000150",
        },
        {"unit": "output", "rate": "0.60", "per": "1M tokens", "quantity": 300, "cost": "0.000180"},
    ]
    assert record.attempts == [
        {
            "channel": relay_env.channel.id,
            "model": "gpt-4o-mini",
            "status": 200,
            "ms": record.attempts[0]["ms"],
        }
    ]

    account = relay_env.refresh()
    assert account.balance == 5_000_000 - 360
    assert account.held == 0
    assert Hold.objects.get(pk=record.hold_id).status == Hold.Status.SETTLED
    charge = Transaction.objects.get(kind="charge", account=account)
    amounts = sorted(charge.entries.values_list("ledger_account__kind", "amount"))
    assert amounts == [("customer", -360), ("revenue", 360)]


def test_request_id_is_generated_when_the_caller_sends_none(relay_env):
    response = relay_env.post(chat())
    rid = response.headers["x-request-id"]
    assert rid.startswith("req_")
    assert settled(rid).request_id == rid


def test_unknown_fields_and_explicit_falsy_values_reach_the_upstream_untouched(relay_env, upstream):
    relay_env.channel.model_mapping = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18"}
    relay_env.channel.save()
    body = chat(
        temperature=0,
        top_p=0,
        presence_penalty=0,
        logprobs=False,
        parallel_tool_calls=False,
        seed=0,
        stop=[],
        metadata={},
        vendor_extension={"nested": [1, None, False]},
        user="end-user-42",
    )

    response = relay_env.post(body)

    assert response.status_code == 200, response.text
    sent = upstream.requests[-1]["json"]
    assert sent == {**body, "model": "gpt-4o-mini-2024-07-18"}
    assert (
        upstream.requests[-1]["headers"]["authorization"]
        == "Bearer sk-upstream-secret-abcdef123456"
    )
    record = settled(response.headers["x-request-id"])
    assert record.upstream_model == "gpt-4o-mini-2024-07-18"
    assert record.user == "end-user-42"


def test_official_openai_client_works_unmodified(relay_env):
    client = openai.OpenAI(
        base_url=f"{relay_env.url}/v1", api_key=relay_env.key.secret, max_retries=0
    )

    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hi"}], max_tokens=50
    )

    assert completion.choices[0].message.content.startswith("Hello from the Tollgate mock upstream")
    assert completion.usage.prompt_tokens > 0
    record = settled(completion._request_id)
    assert record.cost_pico > 0
    assert completion.usage.model_extra["cost"] == pico_to_usd(record.cost_pico)
    assert completion.usage.model_extra["output_tokens"] == record.output_tokens
    models = [m.id for m in client.models.list()]
    assert models == ["gpt-4o-mini", "o4-mini"]

    with pytest.raises(openai.AuthenticationError) as exc:
        openai.OpenAI(
            base_url=f"{relay_env.url}/v1", api_key="sk-tg-wrong", max_retries=0
        ).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert exc.value.code == "invalid_api_key"


def test_reasoning_and_cached_tokens_are_each_billed_at_their_own_price(relay_env, upstream):
    scripted = mock.completion({**chat(), "model": "o4-mini"})
    scripted["usage"] = {
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "prompt_tokens_details": {"cached_tokens": 400},
        "completion_tokens_details": {"reasoning_tokens": 300},
    }
    upstream.then(body=scripted)

    response = relay_env.post({**chat(), "model": "o4-mini"})

    usage = response.json()["usage"]
    # 600 input x 1.10 + 400 cache read x 0.275 + 200 output x 4.40 + 300 reasoning x 8.80
    # = 660 + 110 + 880 + 2640 = 4290 micro-USD
    assert usage["cost"] == "0.004290"
    assert (
        usage["input_tokens"],
        usage["cache_read_tokens"],
        usage["output_tokens"],
        usage["reasoning_tokens"],
    ) == (1000, 400, 500, 300)
    assert (usage["input_tokens"], usage["output_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    record = settled(response.headers["x-request-id"])
    assert record.cost_pico == 4290 * 10**6
    assert relay_env.refresh().balance == 5_000_000 - 4290


def test_upstream_without_usage_is_counted_locally_and_flagged(relay_env, upstream):
    scripted = mock.completion(chat("count me"))
    del scripted["usage"]
    upstream.then(body=scripted)

    response = relay_env.post(chat("count me"))

    usage = response.json()["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    record = settled(response.headers["x-request-id"])
    assert record.estimated is True
    assert record.cost_pico > 0


@pytest.mark.parametrize(
    ("status", "expected_status", "code"),
    [
        (500, 502, "upstream_failed"),
        (503, 502, "upstream_failed"),
        (429, 503, "upstream_rate_limited"),
    ],
)
def test_upstream_failure_is_an_upstream_error_and_charges_nothing(
    relay_env, upstream, status, expected_status, code
):
    upstream.then(status=status)

    response = relay_env.post(chat(), headers={"x-request-id": f"fail-{status}"})

    assert response.status_code == expected_status
    error = response.json()["error"]
    assert error["type"] == "upstream_error"
    assert error["code"] == code
    assert f"fail-{status}" in error["message"]
    record = settled(f"fail-{status}")
    assert record.status == "upstream_error"
    assert record.cost_pico == 0
    account = relay_env.refresh()
    assert (account.balance, account.held) == (5_000_000, 0)
    assert not Transaction.objects.filter(kind="charge").exists()
    assert Hold.objects.get(pk=record.hold_id).status == Hold.Status.RELEASED


def test_unreachable_upstream_is_502_and_timeout_is_504(relay_env, upstream):
    relay_env.channel.base_url = "http://127.0.0.1:9/v1"  # discard port: connection refused
    relay_env.channel.save()
    response = relay_env.post(chat())
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"

    relay_env.channel.base_url = upstream.base_url
    relay_env.channel.request_timeout = 0.2
    relay_env.channel.save()
    from relay.selectors import channel_cache_invalidate

    channel_cache_invalidate()
    upstream.then(delay=1.0)
    response = relay_env.post(chat())
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    wait_for(lambda: UsageRecord.objects.filter(settled_at__isnull=False).count() == 2)
    assert relay_env.refresh().balance == 5_000_000


def test_upstream_rejection_reaches_the_caller_without_upstream_secrets(relay_env, upstream):
    upstream.then(
        status=400,
        body={
            "error": {
                "message": "Invalid value for 'logit_bias' (key sk-upstream-secret-abcdef123456, "
                "see https://user:pass@internal.example/v1)",
                "param": "logit_bias",
            }
        },
    )

    response = relay_env.post(chat(logit_bias={"x": 1}))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "logit_bias"
    assert "sk-upstream-secret" not in response.text
    assert "user:pass" not in response.text
    assert "Invalid value for 'logit_bias'" in error["message"]


def test_failover_to_the_next_channel_before_any_byte_was_sent(relay_env, upstream):
    from tests.support.factories import ChannelFactory

    relay_env.channel.priority = 10
    relay_env.channel.save()
    backup = ChannelFactory(base_url=upstream.base_url, served_models=["gpt-4o-mini"], priority=0)
    upstream.then(status=502)  # the first (higher-priority) channel fails

    response = relay_env.post(chat())

    assert response.status_code == 200
    record = settled(response.headers["x-request-id"])
    assert record.channel_id == backup.id
    assert [a["channel"] for a in record.attempts] == [relay_env.channel.id, backup.id]
    assert [a["status"] for a in record.attempts] == [502, 200]
    assert upstream.calls == 2


def test_settlement_uses_the_ledger_and_every_transaction_balances(relay_env):
    for _ in range(3):
        assert relay_env.post(chat()).status_code == 200
    wait_for(lambda: UsageRecord.objects.filter(settled_at__isnull=True).count() == 0)
    for txn in Transaction.objects.all():
        assert sum(txn.entries.values_list("amount", flat=True)) == 0
    customer = LedgerAccount.objects.get(account=relay_env.account)
    entries_total = sum(
        Entry.objects.filter(ledger_account=customer).values_list("amount", flat=True)
    )
    assert relay_env.refresh().balance == entries_total


def test_client_leaving_a_non_streaming_request_is_billed_for_the_prompt(relay_env, upstream):
    upstream.then(delay=1.5)
    body = chat("I will not wait")
    try:
        relay_env.http.post(
            "/v1/chat/completions",
            json=body,
            headers={
                "authorization": f"Bearer {relay_env.key.secret}",
                "x-request-id": "impatient",
            },
            timeout=0.3,
        )
    except httpx.ReadTimeout:
        pass
    record = settled("impatient")
    assert record.status == "cancelled"
    assert record.estimated is True
    assert record.input_tokens == count_messages(body["messages"])
    assert record.output_tokens == 0
    assert relay_env.refresh().balance == 5_000_000 - record.cost_pico // 10**6


def _usage_table_locked():
    """Hold a lock that lets no usage record be written until the block ends."""
    from django.db import connection, transaction

    @contextlib.contextmanager
    def locked():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {UsageRecord._meta.db_table} IN SHARE ROW EXCLUSIVE MODE")
            yield

    return locked()


def test_the_answer_does_not_wait_for_its_usage_record(relay_env):
    with _usage_table_locked():
        response = relay_env.http.post(
            "/v1/chat/completions",
            json=chat(),
            headers={
                "authorization": f"Bearer {relay_env.key.secret}",
                "x-request-id": "not-held-back",
            },
            timeout=5,
        )
        assert response.status_code == 200
        cost = response.json()["usage"]["cost"]
        assert not UsageRecord.objects.filter(request_id="not-held-back").exists()
    # Written once the table is free, with the cost the answer showed.
    record = settled("not-held-back")
    assert pico_to_usd(record.cost_pico) == cost


def test_a_rate_limited_keys_answer_waits_for_its_record(relay_env):
    # Its record gives the key's capacity back, before its next request can come.
    key = ApiKeyFactory(account=relay_env.account, concurrency_limit=1)
    with httpx.Client(base_url=relay_env.url, timeout=30) as client:
        with _usage_table_locked():
            with pytest.raises(httpx.ReadTimeout):
                client.post(
                    "/v1/chat/completions",
                    json=chat(),
                    headers={"authorization": f"Bearer {key.secret}", "x-request-id": "waits"},
                    timeout=1.5,
                )
    assert settled("waits").status == "success"
