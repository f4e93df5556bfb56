"""Refusals: every one is an OpenAI-shaped error, reaches no upstream and moves no money."""

from datetime import timedelta

import orjson
import pytest
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import api_key_revoke
from billing.models import Hold, Transaction
from billing.reconcile import ledger_check
from relay.providers.mock import upstream as mock
from tests.support.factories import AccountFactory, ApiKeyFactory
from tests.support.relay import chat, error_of
from tests.support.waiting import wait_for
from usage.models import UsageDaily, UsageRecord


def assert_nothing_moved(env, upstream):
    account = env.refresh()
    assert (account.balance, account.held) == (5_000_000, 0)
    assert upstream.calls == 0
    assert not Hold.objects.exists()
    assert not Transaction.objects.filter(kind="charge").exists()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "", "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "gpt-4o-mini"}, "messages"),
        ({"model": "gpt-4o-mini", "messages": []}, "messages"),
        ({"model": "gpt-4o-mini", "messages": "hi"}, "messages"),
        ({"model": "gpt-4o-mini", "messages": ["hi"]}, "messages[0]"),
        ({"model": "gpt-4o-mini", "messages": [{"content": "hi"}]}, "messages[0].role"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(max_tokens=-5), "max_tokens"),
        (chat(max_tokens=1.5), "max_tokens"),
        (chat(max_completion_tokens=0), "max_completion_tokens"),
        (chat(temperature=2.5), "temperature"),
        (chat(temperature=-0.1), "temperature"),
        (chat(temperature="hot"), "temperature"),
        (chat(top_p=1.01), "top_p"),
        (chat(n=0), "n"),
        (chat(n=True), "n"),
        (chat(stream="yes"), "stream"),
        (chat(stream_options={"include_usage": True}), "stream_options"),
        (chat(stream=False, stream_options={"include_usage": True}), "stream_options"),
        (chat(user=42), "user"),
        (chat(stop=5), "stop"),
        (chat(stop=["END", 5]), "stop"),
        (
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": ["hi"]}]},
            "messages[0].content[0]",
        ),
        (
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": [{"type": 1, "text": "hi"}]}],
            },
            "messages[0].content[0]",
        ),
        (
            {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "tool_calls": {"id": "call_1"}},
                ],
            },
            "messages[1].tool_calls",
        ),
        (
            {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": "get_weather"}]},
                ],
            },
            "messages[1].tool_calls[0].function",
        ),
        (
            {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "tool_calls": ["call_1"]},
                ],
            },
            "messages[1].tool_calls[0].function",
        ),
    ],
)
def test_invalid_bodies_get_400_naming_the_param(relay_env, upstream, body, param):
    error = error_of(relay_env.post(body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert_nothing_moved(relay_env, upstream)


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_unparseable_bodies_get_400(relay_env, upstream, raw):
    error = error_of(relay_env.post(None, raw=raw), 400)
    assert error["type"] == "invalid_request_error"
    assert_nothing_moved(relay_env, upstream)


def test_rejected_requests_are_in_the_usage_log_unbilled(relay_env, upstream):
    relay_env.post(chat(temperature=9), headers={"x-request-id": "bad-temp"})
    record = UsageRecord.objects.get(request_id="bad-temp")
    assert record.status == "rejected"
    assert record.http_status == 400
    assert record.cost_pico == 0
    assert record.api_key_id == relay_env.key.id
    # Settled for nothing, and counted in the day's roll-up as an error.
    wait_for(lambda: UsageRecord.objects.get(request_id="bad-temp").settled_at is not None)
    day = UsageDaily.objects.get(account=relay_env.account)
    assert (day.requests, day.errors, day.cost_pico) == (1, 1, 0)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer"},
        {"authorization": "Basic dXNlcjpwYXNz"},
        {"authorization": "Bearer sk-not-ours"},
        {"authorization": "Bearer sk-tg-" + "A" * 38},  # right shape, wrong checksum
    ],
)
def test_missing_or_malformed_keys_get_401(relay_env, upstream, headers):
    response = relay_env.http.post("/v1/chat/completions", json=chat(), headers=headers)
    error = error_of(response, 401)
    assert error["type"] == "authentication_error"
    assert error["code"] == "invalid_api_key"
    assert_nothing_moved(relay_env, upstream)


def test_well_formed_but_unknown_key_gets_401(relay_env, upstream):
    from accounts.keys import key_generate

    error = error_of(relay_env.post(chat(), key=key_generate()), 401)
    assert error["code"] == "invalid_api_key"
    assert_nothing_moved(relay_env, upstream)


def test_revoked_key_is_refused_at_once(relay_env, upstream):
    assert relay_env.post(chat()).status_code == 200
    upstream.reset()

    api_key_revoke(api_key=relay_env.key)

    error = error_of(relay_env.post(chat()), 401)
    assert error["code"] == "invalid_api_key"
    assert upstream.calls == 0


def test_revocation_from_another_process_is_enforced_by_the_hold(relay_env, upstream):
    """Even while this process still has the key cached as active, the reservation
    statement re-checks the key in the database."""
    assert relay_env.post(chat()).status_code == 200
    upstream.reset()
    type(relay_env.key).objects.filter(pk=relay_env.key.pk).update(
        status="revoked"
    )  # no cache invalidation

    error = error_of(relay_env.post(chat()), 401)
    assert error["code"] == "invalid_api_key"
    assert upstream.calls == 0


def test_expired_key_gets_401(relay_env, upstream):
    key = ApiKeyFactory(account=relay_env.account)
    # A key made with an expiry in the past is refused; this one has since expired.
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    error = error_of(relay_env.post(chat(), key=key.secret), 401)
    assert "expired" in error["message"]
    assert_nothing_moved(relay_env, upstream)


def test_unpriced_model_is_404(relay_env, upstream):
    error = error_of(relay_env.post({**chat(), "model": "gpt-9-ultra"}), 404)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert_nothing_moved(relay_env, upstream)


def test_model_outside_the_keys_allowed_list_is_403(relay_env, upstream):
    key = ApiKeyFactory(account=relay_env.account, allowed_models=["o4-mini"])
    error = error_of(relay_env.post(chat(), key=key.secret), 403)
    assert (error["type"], error["code"]) == ("permission_error", "model_not_allowed")
    assert_nothing_moved(relay_env, upstream)


def test_address_outside_the_keys_allowlist_is_403(relay_env, upstream):
    key = ApiKeyFactory(account=relay_env.account, ip_allowlist=["10.0.0.0/8"])
    error = error_of(relay_env.post(chat(), key=key.secret), 403)
    assert error["code"] == "ip_not_allowed"
    allowed = ApiKeyFactory(account=relay_env.account, ip_allowlist=["127.0.0.0/8"])
    assert relay_env.post(chat(), key=allowed.secret).status_code == 200


def test_balance_that_cannot_cover_the_hold_is_403_and_no_upstream_call(relay_env, upstream):
    poor = AccountFactory(price_group=relay_env.group, credit=1)
    key = ApiKeyFactory(account=poor)

    error = error_of(relay_env.post(chat(), key=key.secret), 403)

    assert (error["type"], error["code"]) == ("billing_error", "insufficient_balance")
    assert upstream.calls == 0
    poor.refresh_from_db()
    assert (poor.balance, poor.held) == (1, 0)


def test_zero_balance_account_is_refused(relay_env, upstream):
    empty = AccountFactory(price_group=relay_env.group)
    key = ApiKeyFactory(account=empty)
    error = error_of(relay_env.post(chat(max_tokens=1), key=key.secret), 403)
    assert error["code"] == "insufficient_balance"
    assert upstream.calls == 0


def test_suspended_account_is_refused(relay_env, upstream):
    type(relay_env.account).objects.filter(pk=relay_env.account.pk).update(status="suspended")
    error = error_of(relay_env.post(chat()), 403)
    assert (error["type"], error["code"]) == ("permission_error", "account_suspended")
    assert upstream.calls == 0


def test_account_suspended_after_its_key_was_cached_is_refused_by_the_hold(relay_env, upstream):
    assert relay_env.post(chat()).status_code == 200
    upstream.reset()
    type(relay_env.account).objects.filter(pk=relay_env.account.pk).update(status="suspended")
    error = error_of(relay_env.post(chat()), 403)
    assert error["code"] == "account_suspended"
    assert upstream.calls == 0


def test_wrong_method_is_405_in_the_same_shape(relay_env):
    response = relay_env.http.get(
        "/v1/chat/completions", headers={"authorization": f"Bearer {relay_env.key.secret}"}
    )
    error = error_of(response, 405)
    assert response.headers["allow"] == "POST"
    assert error["code"] == "method_not_allowed"


# JSON nested deeper than the gateway's serialiser goes (orjson stops at 254 levels,
# its parser at 1024): an answer the gateway reads but cannot write back out.
TOO_DEEP = b"[" * 300 + b"]" * 300


def test_a_gateway_failure_after_the_hold_ends_the_request_cleanly(relay_env, upstream):
    answer = orjson.dumps(mock.completion(chat()))
    upstream.then(body=answer[:-1] + b',"deep":' + TOO_DEEP + b"}")
    response = relay_env.post(chat(), headers={"x-request-id": "deep-answer"})
    error = error_of(response, 500)
    assert (error["type"], error["code"]) == ("api_error", "internal_error")
    assert "deep-answer" in error["message"]
    record = wait_for(
        lambda: UsageRecord.objects.filter(
            request_id="deep-answer", settled_at__isnull=False
        ).first()
    )
    # The answer never reached the client: nothing is charged, the hold is released.
    assert (record.status, record.http_status, record.error_code) == (
        "failed",
        500,
        "internal_error",
    )
    assert record.cost_pico == 0
    assert UsageRecord.objects.filter(request_id="deep-answer").count() == 1
    assert relay_env.refresh().held == 0
    assert ledger_check() == []


def test_a_gateway_failure_mid_stream_ends_with_an_error_event_and_charges_nothing(
    relay_env, upstream
):
    # The usage riding on each content chunk makes the gateway rewrite the chunk.
    usage = b'"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}'
    upstream.then(extra_raw=b'"deep":' + TOO_DEEP + b"," + usage)
    with relay_env.http.stream(
        "POST",
        "/v1/chat/completions",
        json=chat(stream=True),
        headers={"authorization": f"Bearer {relay_env.key.secret}", "x-request-id": "deep-stream"},
    ) as response:
        events = [e for e in response.read().split(b"\n\n") if e.strip()]
    assert response.status_code == 200
    assert b"[DONE]" not in events[-1]
    error = orjson.loads(events[-1].removeprefix(b"data: "))["error"]
    assert (error["type"], error["code"]) == ("api_error", "internal_error")
    record = wait_for(
        lambda: UsageRecord.objects.filter(
            request_id="deep-stream", settled_at__isnull=False
        ).first()
    )
    assert (record.status, record.error_code, record.http_status) == (
        "failed",
        "internal_error",
        500,
    )
    # The gateway's own failure is not the customer's to pay for.
    assert record.cost_pico == 0
    assert UsageRecord.objects.filter(request_id="deep-stream").count() == 1
    assert relay_env.refresh().held == 0
    assert ledger_check() == []
