"""Stored responses: ``previous_response_id`` chains and ``GET``/``DELETE
/v1/responses/{id}``, ``/input_items`` and ``/cancel``, for responses an upstream
keeps (its channel speaks the Responses API) and for those Tollgate keeps (served
through translation, or by the built-in mock). Only the account that made a
response reaches it; the routes bill nothing."""

import asyncio
from datetime import timedelta

import httpx
import openai
import pytest
from django.utils import timezone

from relay.lifecycle import endings_settled
from relay.models import Channel, StoredResponse
from relay.providers.client import close_sessions
from relay.selectors import channel_cache_invalidate
from tests.support.factories import AccountFactory, ApiKeyFactory, ChannelFactory
from tests.support.relay import error_of
from tests.support.responses import WEATHER_FN, client_for, settled
from tests.support.statements import statements
from usage.models import UsageRecord


def auth(key) -> dict:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def stranger(relay_env):
    """A key of another account, in the same price group, with money."""
    account = AccountFactory(price_group=relay_env.group, credit=1_000_000)
    return ApiKeyFactory(account=account)


# -- kept by Tollgate ---------------------------------------------------------------------


def test_a_translated_conversation_continues_from_what_tollgate_kept(relay_env, upstream):
    client = client_for(relay_env)
    first = client.responses.create(model="gpt-4o-mini", instructions="Be brief.", input="Hi")
    second = client.responses.create(
        model="gpt-4o-mini", input="And Lyon?", previous_response_id=first.id
    )
    # The conversation so far, without the first turn's instructions (as OpenAI does).
    assert upstream.requests[-1]["json"]["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "And Lyon?"},
    ]
    assert second.previous_response_id == first.id
    with client.responses.stream(
        model="gpt-4o-mini", input="And Nice?", previous_response_id=second.id
    ) as events:
        third = events.get_final_response()
    assert [m["content"] for m in upstream.requests[-1]["json"]["messages"]] == [
        "Hi",
        first.output_text,
        "And Lyon?",
        second.output_text,
        "And Nice?",
    ]
    # A streamed response is kept too, from its last event.
    fourth = client.responses.create(
        model="gpt-4o-mini", input="Bye", previous_response_id=third.id
    )
    assert len(upstream.requests[-1]["json"]["messages"]) == 7
    assert fourth.output_text.endswith("You said: Bye")


def test_a_kept_response_is_retrieved_listed_and_deleted(relay_env, upstream):
    client = client_for(relay_env)
    first = client.responses.create(model="gpt-4o-mini", input="Hi")
    second = client.responses.create(
        model="gpt-4o-mini", input="And Lyon?", previous_response_id=first.id
    )
    settled(first._request_id), settled(second._request_id)
    records = UsageRecord.objects.count()
    balance = relay_env.refresh().balance

    again = client.responses.retrieve(second.id)
    assert again.model_dump() == second.model_dump()
    assert again.usage.model_extra["cost"] == second.usage.model_extra["cost"]

    items = client.responses.input_items.list(second.id, order="asc")
    assert [item.type for item in items.data] == ["message", "message", "message"]
    assert [item.role for item in items.data] == ["user", "assistant", "user"]
    assert items.data[2].content[0].text == "And Lyon?"
    assert all(item.id for item in items.data) and not items.has_more
    newest = client.responses.input_items.list(second.id, limit=2)
    assert [item.id for item in newest.data] == [items.data[2].id, items.data[1].id]
    assert newest.has_more
    rest = client.responses.input_items.list(second.id, limit=2, after=newest.data[-1].id)
    assert [item.id for item in rest.data] == [items.data[0].id] and not rest.has_more

    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.cancel(second.id)
    assert refused.value.code == "response_not_cancellable"

    deleted = relay_env.http.delete(
        f"/v1/responses/{second.id}", headers=auth(relay_env.key.secret)
    )
    assert deleted.json() == {"id": second.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-4o-mini", input="x", previous_response_id=second.id)
    # None of these were billed; the refused continuation is on record, at no cost.
    assert relay_env.refresh().balance == balance
    assert UsageRecord.objects.count() == records + 1
    assert upstream.calls == 2


def test_the_mocks_responses_are_kept_by_tollgate(relay_env):
    Channel.objects.filter(pk=relay_env.channel.pk).update(status=Channel.Status.DISABLED)
    ChannelFactory(name="mock", type="mock", base_url="", served_models=["gpt-4o-mini"])
    channel_cache_invalidate()
    client = client_for(relay_env)
    first = client.responses.create(model="gpt-4o-mini", input="Weather?", tools=[WEATHER_FN])
    call = first.output[-1]
    answer = client.responses.create(
        model="gpt-4o-mini",
        tools=[WEATHER_FN],
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C"}],
    )
    assert answer.output_text == "The tool returned: 18C"
    assert client.responses.retrieve(answer.id).output_text == answer.output_text
    kept = StoredResponse.objects.get(response_id=answer.id)
    assert (kept.upstream, kept.account_id) == (False, relay_env.account.pk)
    # Each kept response holds its own turn and points at the one it continued ...
    assert (kept.previous, [i["type"] for i in kept.items]) == (first.id, ["function_call_output"])
    # ... and the conversation the model was given is the chain of them.
    given = client.responses.input_items.list(answer.id, order="asc")
    assert [item.type for item in given.data] == [
        "message",
        "function_call",
        "function_call_output",
    ]


def test_a_long_conversation_is_kept_turn_by_turn_and_continued_whole(relay_env):
    Channel.objects.filter(pk=relay_env.channel.pk).update(status=Channel.Status.DISABLED)
    ChannelFactory(name="mock", type="mock", base_url="", served_models=["gpt-4o-mini"])
    channel_cache_invalidate()
    client = client_for(relay_env)
    previous = None
    for turn in range(12):
        reply = client.responses.create(
            model="gpt-4o-mini",
            input=f"Turn {turn}: say hello",
            previous_response_id=previous,
            extra_body={"mock": {"reply": f"Hello {turn}"}},
        )
        previous = reply.id
    # A row never grows with the conversation: one input item each.
    assert {len(r.items) for r in StoredResponse.objects.all()} == {1}
    # The last turn was given all twelve questions and the eleven answers before it.
    given = client.responses.input_items.list(previous, order="asc", limit=100)
    texts = [part.text for item in given.data for part in item.content]
    assert texts[0] == "Turn 0: say hello" and texts[-1] == "Turn 11: say hello"
    assert len(given.data) == 12 + 11
    assert "Hello 10" in texts


def test_stored_responses_past_their_retention_are_deleted(relay_env, settings):
    from relay.tasks import responses_expire

    Channel.objects.filter(pk=relay_env.channel.pk).update(status=Channel.Status.DISABLED)
    ChannelFactory(name="mock", type="mock", base_url="", served_models=["gpt-4o-mini"])
    channel_cache_invalidate()
    client = client_for(relay_env)
    old = client.responses.create(model="gpt-4o-mini", input="Old")
    new = client.responses.create(model="gpt-4o-mini", input="New")
    StoredResponse.objects.filter(response_id=old.id).update(
        created_at=timezone.now() - timedelta(days=31)
    )
    settings.TOLLGATE = {**settings.TOLLGATE, "STORED_RESPONSE_DAYS": 30}
    assert responses_expire() == 1
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(old.id)
    assert client.responses.retrieve(new.id).id == new.id


# -- kept by the upstream -----------------------------------------------------------------


def test_a_continuation_goes_to_the_channel_that_keeps_the_response(
    relay_env, native_channel, native_upstream, upstream
):
    client = client_for(relay_env)
    first = client.responses.create(model="gpt-4o-mini", input="Hi")
    # Another channel now serves the model, and is preferred.
    Channel.objects.filter(pk=relay_env.channel.pk).update(
        status=Channel.Status.ENABLED, priority=10
    )
    channel_cache_invalidate()
    second = client.responses.create(
        model="gpt-4o-mini", input="And Lyon?", previous_response_id=first.id
    )
    sent = native_upstream.requests[-1]["json"]
    assert sent["previous_response_id"] == first.id and sent["input"] == "And Lyon?"
    assert upstream.calls == 0
    assert settled(second._request_id).channel_id == native_channel.pk
    client.responses.create(model="gpt-4o-mini", input="Something else")
    assert upstream.calls == 1


def test_a_continuation_whose_channel_is_out_of_service_is_a_503(
    relay_env, native_channel, native_upstream
):
    first = client_for(relay_env).responses.create(model="gpt-4o-mini", input="Hi")
    Channel.objects.filter(pk=native_channel.pk).update(status=Channel.Status.DISABLED)
    Channel.objects.filter(pk=relay_env.channel.pk).update(status=Channel.Status.ENABLED)
    channel_cache_invalidate()
    response = relay_env.http.post(
        "/v1/responses",
        json={"model": "gpt-4o-mini", "input": "x", "previous_response_id": first.id},
        headers=auth(relay_env.key.secret),
    )
    assert error_of(response, 503)["code"] == "no_channel_available"
    assert native_upstream.calls == 1


def test_the_routes_of_a_response_kept_upstream_are_forwarded_to_it(
    relay_env, native_channel, native_upstream
):
    client = client_for(relay_env)
    first = client.responses.create(model="gpt-4o-mini", input="Hi")
    records = UsageRecord.objects.count()

    again = client.responses.retrieve(first.id, include=["message.output_text.logprobs"])
    assert again.id == first.id
    # What was charged for it, as the answer said.
    assert again.usage.model_extra["cost"] == first.usage.model_extra["cost"]
    assert again.usage.output_tokens == first.usage.output_tokens
    items = client.responses.input_items.list(first.id)
    assert items.data[0].content[0].text == "Hi"
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(first.id)
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)

    forwarded = [(r["method"], r["path"]) for r in native_upstream.stored_requests()]
    assert forwarded == [
        ("GET", f"/v1/responses/{first.id}"),
        ("GET", f"/v1/responses/{first.id}/input_items"),
        ("POST", f"/v1/responses/{first.id}/cancel"),
        ("DELETE", f"/v1/responses/{first.id}"),
    ]
    request = native_upstream.stored_requests()[0]
    assert "include" in request["query"]
    assert request["headers"]["authorization"] == "Bearer sk-native-upstream-secret-98765"
    assert UsageRecord.objects.count() == records
    assert not StoredResponse.objects.exists()


# -- whose it is ------------------------------------------------------------------------------


@pytest.mark.parametrize("kept", ["upstream", "tollgate"])
def test_another_accounts_response_is_a_404_on_every_route(
    relay_env, native_upstream, upstream, stranger, request, kept
):
    if kept == "upstream":
        request.getfixturevalue("native_channel")
    first = client_for(relay_env).responses.create(model="gpt-4o-mini", input="Secret plans")
    calls = native_upstream.calls + upstream.calls
    other = client_for(relay_env, stranger.secret)
    for route in (
        lambda: other.responses.retrieve(first.id),
        lambda: other.responses.delete(first.id),
        lambda: other.responses.input_items.list(first.id),
        lambda: other.responses.cancel(first.id),
    ):
        with pytest.raises(openai.NotFoundError) as missing:
            route()
        assert "Secret plans" not in str(missing.value.body)
    with pytest.raises(openai.NotFoundError) as missing:
        other.responses.create(model="gpt-4o-mini", input="x", previous_response_id=first.id)
    assert missing.value.body["param"] == "previous_response_id"
    assert missing.value.code == "previous_response_not_found"
    # Nothing reached an upstream, and the owner still has it.
    assert native_upstream.calls + upstream.calls == calls
    assert client_for(relay_env).responses.retrieve(first.id).id == first.id


@pytest.mark.parametrize("kept", ["upstream", "tollgate"])
def test_store_false_keeps_nothing(relay_env, native_upstream, upstream, request, kept):
    if kept == "upstream":
        request.getfixturevalue("native_channel")
    client = client_for(relay_env)
    response = client.responses.create(model="gpt-4o-mini", input="Hi", store=False)
    assert response.output_text
    assert not StoredResponse.objects.exists()
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_the_routes_answer_in_openais_shape_whatever_goes_wrong(relay_env, upstream):
    first = client_for(relay_env).responses.create(model="gpt-4o-mini", input="Hi")
    url = f"/v1/responses/{first.id}"
    assert error_of(relay_env.http.get(url), 401)["code"] == "invalid_api_key"
    wrong = relay_env.http.put(url, headers=auth(relay_env.key.secret))
    assert error_of(wrong, 405)["code"] == "method_not_allowed"
    assert wrong.headers["allow"] == "GET, DELETE"
    page = relay_env.http.get(f"{url}/input_items?limit=0", headers=auth(relay_env.key.secret))
    assert error_of(page, 400)["param"] == "limit"
    page = relay_env.http.get(f"{url}/input_items?after=nope", headers=auth(relay_env.key.secret))
    assert error_of(page, 400)["param"] == "after"
    again = relay_env.http.get(f"{url}?stream=true", headers=auth(relay_env.key.secret))
    assert error_of(again, 400)["param"] == "stream"
    for unknown in ("resp_nope", "resp%00nul", "r" * 300):
        missing = relay_env.http.get(f"/v1/responses/{unknown}", headers=auth(relay_env.key.secret))
        assert error_of(missing, 404)["code"] == "response_not_found"


# -- what it costs the database -----------------------------------------------------------


def test_a_response_kept_adds_one_statement_and_a_continuation_one_lookup(
    relay_env, native_channel
):
    from config.asgi import application
    from core import adb, invalidation

    def body(**extra):
        return {"model": "gpt-4o-mini", "input": "Hi", **extra}

    async def relay() -> list[list[str]]:
        transport = httpx.ASGITransport(app=application)
        headers = auth(relay_env.key.secret)
        seen = []
        async with httpx.AsyncClient(transport=transport, base_url="http://tollgate") as http:
            try:
                for _ in range(2):
                    warm = await http.post("/v1/responses", json=body(store=False), headers=headers)
                    assert warm.status_code == 200
                    await endings_settled(10)
                    assert await asyncio.to_thread(invalidation.subscribed.wait, 10)
                kept = None
                for request in (
                    body(store=False),
                    body(),
                    {**body(stream=True), "store": False},
                    body(stream=True),
                    "continuation",
                ):
                    if request == "continuation":
                        request = body(previous_response_id=kept)
                    with statements() as sql:
                        response = await http.post("/v1/responses", json=request, headers=headers)
                        assert response.status_code == 200, response.text
                        if not request.get("stream"):
                            kept = response.json()["id"]
                        await endings_settled(10)
                    seen.append(sql)
            finally:
                await close_sessions()
                await adb.close()
        return seen

    seen = asyncio.run(relay())
    assert [len(sql) for sql in seen] == [2, 3, 2, 3, 4], [[q[:40] for q in s] for s in seen]
    assert "storedresponse" in seen[1][2].lower() and "storedresponse" in seen[3][2].lower()
    continuation = seen[4]
    assert "storedresponse" in continuation[0].lower() and "hold" in continuation[1].lower()


def test_reading_stored_responses_is_rate_limited_and_counted(relay_env):
    from tests.test_metrics import delta, scrape

    Channel.objects.filter(pk=relay_env.channel.pk).update(status=Channel.Status.DISABLED)
    ChannelFactory(name="mock", type="mock", base_url="", served_models=["gpt-4o-mini"])
    channel_cache_invalidate()
    kept = client_for(relay_env).responses.create(model="gpt-4o-mini", input="Hi")
    limited = ApiKeyFactory(account=relay_env.account, rpm_limit=2)
    before = scrape(relay_env.http)
    headers = {"authorization": f"Bearer {limited.secret}"}
    answers = [relay_env.http.get(f"/v1/responses/{kept.id}", headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert error_of(answers[2], 429)["code"] == "rate_limit_exceeded"
    assert int(answers[2].headers["retry-after"]) >= 1
    owner = {"authorization": f"Bearer {relay_env.key.secret}"}
    missing = relay_env.http.get("/v1/responses/resp_nobody", headers=owner)
    assert missing.status_code == 404
    after = scrape(relay_env.http)
    counted = {"endpoint": "responses.retrieve"}
    assert delta(before, after, "tollgate_requests_total", **counted, status="success") == 2
    assert delta(before, after, "tollgate_requests_total", **counted, code="429") == 1
    assert delta(before, after, "tollgate_requests_total", **counted, code="404") == 1
