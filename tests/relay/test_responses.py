"""``POST /v1/responses`` on a channel that speaks the Responses API, and on the
built-in mock: passed through, streamed event by event, and billed once from what
the last event reports, every token kind and hosted tool at its own price."""

import io

import openai
import orjson
import pytest
from django.core.management import call_command

from billing.pricing import Price, token_components
from core.money import Units, pico_to_usd
from relay.admin import ChannelForm
from relay.dialects.responses import RESPONSES
from relay.models import Channel
from relay.selectors import channel_cache_invalidate, channels_enabled
from relay.tokens import count_text
from tests.support.factories import AccountFactory, ApiKeyFactory, ChannelFactory, ModelPriceFactory
from tests.support.relay import error_of
from tests.support.responses import (
    WEATHER_FN,
    client_for,
    post,
    settled,
    stream,
    typed_events,
)
from tests.support.waiting import wait_for

MINI = Price.of(model="gpt-4o-mini", components=token_components(input="0.15", output="0.60"))
O4 = Price.of(
    model="o4-mini",
    components=token_components(input="1.10", output="4.40", cache_read="0.275", reasoning="8.80"),
)
LONG_REPLY = " ".join(f"word{i}" for i in range(40))
WEB_SEARCH = [
    {"unit": "input", "rate": "0.15"},
    {"unit": "output", "rate": "0.60"},
    {"unit": "tool_call", "rate": "10.00", "tool": "web_search"},
]


def billed(record) -> Units:
    return Units(
        input=record.input_tokens,
        cache_read=record.cache_read_tokens,
        output=record.output_tokens,
        reasoning=record.reasoning_tokens,
        tool_calls=tuple(sorted(record.unit_details.get("tool_calls", {}).items())),
    )


def test_a_response_is_passed_through_and_billed_by_every_token_kind(
    relay_env, native_channel, native_upstream
):
    response = client_for(relay_env).responses.create(
        model="o4-mini",
        input="Plan a trip to Lyon",
        reasoning={"effort": "high"},
        metadata={"ticket": "42"},
        temperature=0,
        extra_body={"mock": {"cached_tokens": 4, "reasoning_tokens": 50}, "seed_hint": False},
    )
    sent = native_upstream.requests[-1]
    assert sent["path"] == "/v1/responses"
    assert sent["headers"]["authorization"] == "Bearer sk-native-upstream-secret-98765"
    # Every field the client sent goes as it came: an explicit 0 or false is a value.
    assert (sent["json"]["temperature"], sent["json"]["seed_hint"]) == (0, False)
    assert sent["json"]["metadata"] == {"ticket": "42"}
    assert sent["json"]["reasoning"] == {"effort": "high"}
    assert response.output_text.endswith("You said: Plan a trip to Lyon")

    usage = response.usage
    assert usage.input_tokens_details.cached_tokens == 4
    assert usage.output_tokens_details.reasoning_tokens == 50
    record = settled(response._request_id)
    assert (record.endpoint, record.status, record.estimated) == ("responses", "success", False)
    assert billed(record) == Units(
        input=usage.input_tokens - 4, cache_read=4, output=usage.output_tokens - 50, reasoning=50
    )
    assert record.cost_pico == O4.cost(billed(record))
    assert usage.model_extra["cost"] == pico_to_usd(record.cost_pico)
    assert relay_env.refresh().balance == 5_000_000 - record.cost_pico // 10**6


def test_a_stream_passes_every_event_through_byte_for_byte_and_bills_the_last(
    relay_env, native_channel, native_upstream
):
    body = {
        "model": "gpt-4o-mini",
        "input": "Weather in Paris?",
        "tools": [WEATHER_FN],
        "reasoning": {"summary": "auto"},
    }
    with stream(relay_env, body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        received = list(typed_events(response))
    sent = native_upstream.sent
    assert [raw for raw, _ in received[:-1]] == sent[:-1]
    kinds = [event["type"] for _, event in received]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.reasoning_summary_text.delta" in kinds
    assert "response.function_call_arguments.delta" in kinds

    last = received[-1][1]["response"]
    upstream_last = orjson.loads(sent[-1].split(b"data: ", 1)[1])["response"]
    record = settled(response.headers["x-request-id"])
    assert last["usage"]["cost"] == pico_to_usd(record.cost_pico)
    for name in ("input_tokens", "output_tokens", "output_tokens_details", "total_tokens"):
        assert last["usage"][name] == upstream_last["usage"][name]
    assert {**last, "usage": None} == {**upstream_last, "usage": None}
    reasoning = upstream_last["usage"]["output_tokens_details"]["reasoning_tokens"]
    assert record.reasoning_tokens == reasoning > 0
    assert record.cost_pico == MINI.cost(billed(record)) and not record.estimated


def test_the_clients_stream_helper_reads_deltas_function_calls_and_the_bill(
    relay_env, native_channel
):
    client = client_for(relay_env)
    with client.responses.stream(
        model="gpt-4o-mini", input="Weather in Paris?", tools=[WEATHER_FN]
    ) as events:
        deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
        final = events.get_final_response()
        request_id = events._response.headers["x-request-id"]
    call = final.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert orjson.loads("".join(deltas)) == orjson.loads(call.arguments) == {"city": "Paris"}
    record = settled(request_id)
    assert final.usage.model_extra["cost"] == pico_to_usd(record.cost_pico)


@pytest.mark.parametrize("streamed", [False, True], ids=["answer", "stream"])
def test_an_incomplete_response_bills_what_it_reports(relay_env, native_channel, streamed):
    client = client_for(relay_env)
    body = {"model": "gpt-4o-mini", "input": "Tell me a story", "max_output_tokens": 5}
    if streamed:
        events = client.responses.create(**body, stream=True)
        last = list(events)[-1]
        assert last.type == "response.incomplete"
        response, request_id = last.response, events.response.headers["x-request-id"]
    else:
        response = client.responses.create(**body)
        request_id = response._request_id
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert 0 < response.usage.output_tokens <= 5
    record = settled(request_id)
    assert (record.status, record.estimated) == ("success", False)
    assert record.output_tokens == response.usage.output_tokens
    assert response.usage.model_extra["cost"] == pico_to_usd(record.cost_pico)


def test_a_failed_response_bills_what_it_reports(relay_env, native_channel, native_upstream):
    native_upstream.then(terminal="response.failed")
    with stream(relay_env, {"model": "gpt-4o-mini", "input": "Hi"}) as response:
        events = [event for _, event in typed_events(response)]
    last = events[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    record = settled(response.headers["x-request-id"])
    assert record.input_tokens == last["response"]["usage"]["input_tokens"]
    assert record.output_tokens == last["response"]["usage"]["output_tokens"]
    assert last["response"]["usage"]["cost"] == pico_to_usd(record.cost_pico) != "0.000000"


def test_a_client_leaving_mid_stream_pays_its_prompt_and_what_it_received(
    relay_env, native_channel, native_upstream
):
    native_upstream.then(chunk_delay=0.1)
    body = {"model": "gpt-4o-mini", "input": "Tell me a story", "mock": {"reply": LONG_REPLY}}
    deltas: list[str] = []
    with stream(relay_env, body) as response:
        for _, event in typed_events(response):
            if event["type"] == "response.output_text.delta":
                deltas.append(event["delta"])
                if len(deltas) == 5:
                    break  # leaving the block closes the connection mid-stream
    record = settled(response.headers["x-request-id"])
    assert "".join(deltas) == " ".join(LONG_REPLY.split()[:5])
    assert (record.status, record.estimated) == ("cancelled", True)
    assert record.output_tokens == count_text("".join(deltas))
    assert record.input_tokens == RESPONSES.prompt_tokens({**body, "stream": True})
    assert record.cost_pico == MINI.cost(billed(record)) > 0
    wait_for(lambda: native_upstream.streams_cancelled == 1)
    assert native_upstream.streams_finished == 0


def test_an_upstream_breaking_mid_stream_ends_with_an_error_event(
    relay_env, native_channel, native_upstream
):
    native_upstream.then(break_after=8)
    with stream(relay_env, {"model": "gpt-4o-mini", "input": "Hi"}) as response:
        events = [event for _, event in typed_events(response)]
    error = events[-1]
    assert error["type"] == "error" and error["code"] == "upstream_stream_failed"
    assert response.headers["x-request-id"] in error["message"]
    assert error["sequence_number"] == events[-2]["sequence_number"] + 1
    record = settled(response.headers["x-request-id"])
    assert (record.status, record.estimated) == ("interrupted", True)
    delivered = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert record.output_tokens == count_text(delivered) > 0


@pytest.mark.parametrize("streamed", [False, True], ids=["answer", "stream"])
def test_a_hosted_web_search_is_billed_with_its_tool_call_component(
    relay_env, native_channel, streamed
):
    ModelPriceFactory(group=relay_env.group, model="gpt-4o-mini", components=WEB_SEARCH)
    client = client_for(relay_env)
    body = {"model": "gpt-4o-mini", "input": "News from Lyon?", "tools": [{"type": "web_search"}]}
    if streamed:
        events = client.responses.create(**body, stream=True)
        response = list(events)[-1].response
        request_id = events.response.headers["x-request-id"]
    else:
        response = client.responses.create(**body)
        request_id = response._request_id
    assert [item.type for item in response.output] == ["web_search_call", "message"]
    record = settled(request_id)
    assert record.tool_calls == 1
    assert record.unit_details["tool_calls"] == {"web_search": 1}
    cost = Price.of(model="gpt-4o-mini", components=WEB_SEARCH).cost(billed(record))
    tokens_only = MINI.cost(billed(record))
    # $10 per 1,000 searches: one costs a cent on top of the tokens.
    assert record.cost_pico == cost == tokens_only + 10**10
    assert response.usage.model_extra["tool_calls"] == {"web_search": 1}
    assert response.usage.model_extra["cost"] == pico_to_usd(record.cost_pico)


def test_the_responses_own_count_of_billable_searches_wins(
    relay_env, native_channel, native_upstream
):
    ModelPriceFactory(group=relay_env.group, model="gpt-4o-mini", components=WEB_SEARCH)
    native_upstream.then(tool_usage={"web_search": {"num_requests": 3}})
    response = client_for(relay_env).responses.create(
        model="gpt-4o-mini", input="News?", tools=[{"type": "web_search"}]
    )
    record = settled(response._request_id)
    assert record.unit_details["tool_calls"] == {"web_search": 3}
    assert record.cost_pico == MINI.cost(billed(record)) + 3 * 10**10


@pytest.mark.parametrize("streamed", [False, True], ids=["answer", "stream"])
def test_a_failing_channel_fails_over_before_the_first_byte(
    relay_env, native_channel, native_upstream, upstream, streamed
):
    """The next channel may be one that only speaks chat completions: the request is
    translated for it."""
    Channel.objects.filter(pk=native_channel.pk).update(priority=10)
    Channel.objects.filter(pk=relay_env.channel.pk).update(status=Channel.Status.ENABLED)
    channel_cache_invalidate()
    native_upstream.then(status=503)
    client = client_for(relay_env)
    if streamed:
        events = client.responses.create(model="gpt-4o-mini", input="Hi", stream=True)
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        request_id = events.response.headers["x-request-id"]
    else:
        response = client.responses.create(model="gpt-4o-mini", input="Hi")
        text, request_id = response.output_text, response._request_id
    assert text == "Hello from the Tollgate mock upstream. You said: Hi"
    assert upstream.requests[-1]["path"] == "/v1/chat/completions"
    record = settled(request_id)
    assert [(a["channel"], a["status"]) for a in record.attempts] == [
        (native_channel.pk, 503),
        (relay_env.channel.pk, 200),
    ]
    assert record.channel_id == relay_env.channel.pk


def test_refusals_follow_the_other_endpoints_and_reach_no_upstream(
    relay_env, native_channel, native_upstream
):
    error = error_of(post(relay_env, {"model": "gpt-4o-mini", "input": 5}), 400)
    assert (error["type"], error["param"]) == ("invalid_request_error", "input")
    error = error_of(post(relay_env, {"model": "gpt-9", "input": "Hi"}), 404)
    assert error["code"] == "model_not_found"
    error = error_of(post(relay_env, {"model": "gpt-4o-mini", "input": "Hi"}, key="sk-nope"), 401)
    assert error["code"] == "invalid_api_key"
    broke = ApiKeyFactory(account=AccountFactory(price_group=relay_env.group))
    response = post(relay_env, {"model": "gpt-4o-mini", "input": "Hi"}, key=broke.secret)
    assert error_of(response, 403)["code"] == "insufficient_balance"
    limited = ApiKeyFactory(account=relay_env.account, rpm_limit=1)
    assert post(relay_env, {"model": "gpt-4o-mini", "input": "Hi"}, key=limited.secret).is_success
    response = post(relay_env, {"model": "gpt-4o-mini", "input": "Hi"}, key=limited.secret)
    assert error_of(response, 429)["type"] == "rate_limit_error"
    assert int(response.headers["retry-after"]) >= 1
    assert native_upstream.calls == 1


def test_upstream_failures_are_answered_in_openais_shape(
    relay_env, native_channel, native_upstream
):
    native_upstream.then(status=400, message="Unsupported parameter: 'foo'.")
    with pytest.raises(openai.BadRequestError) as refused:
        client_for(relay_env).responses.create(
            model="gpt-4o-mini", input="Hi", extra_body={"foo": 1}
        )
    assert refused.value.body["message"] == "Unsupported parameter: 'foo'."
    native_upstream.then(status=500)
    response = post(relay_env, {"model": "gpt-4o-mini", "input": "Hi"})
    error = error_of(response, 502)
    assert error["type"] == "upstream_error"
    assert response.headers["x-request-id"] in error["message"]
    assert settled(response.headers["x-request-id"]).cost_pico == 0


@pytest.mark.parametrize("streamed", [False, True], ids=["answer", "stream"])
def test_an_upstream_that_does_not_answer_in_time_is_a_504(
    relay_env, native_channel, native_upstream, streamed
):
    Channel.objects.filter(pk=native_channel.pk).update(request_timeout=0.3)
    channel_cache_invalidate()
    native_upstream.then(delay=2)
    response = post(relay_env, {"model": "gpt-4o-mini", "input": "Hi", "stream": streamed})
    assert error_of(response, 504)["code"] == "upstream_timeout"
    assert settled(response.headers["x-request-id"]).cost_pico == 0


# -- the built-in mock --------------------------------------------------------------------


@pytest.fixture
def mock_channel(relay_env):
    """``relay_env``'s models served by the built-in mock alone."""
    Channel.objects.filter(pk=relay_env.channel.pk).update(status=Channel.Status.DISABLED)
    channel = ChannelFactory(name="mock", type="mock", base_url="", served_models=["o4-mini"])
    channel_cache_invalidate()
    return channel


def test_the_mock_streams_a_reasoning_summary_a_function_call_and_scripted_usage(
    relay_env, mock_channel
):
    client = client_for(relay_env)
    with client.responses.stream(
        model="o4-mini",
        input="Weather in Paris?",
        tools=[WEATHER_FN],
        reasoning={"effort": "low", "summary": "auto"},
        extra_body={"mock": {"cached_tokens": 3, "reasoning_tokens": 40}},
    ) as events:
        summary = "".join(
            e.delta for e in events if e.type == "response.reasoning_summary_text.delta"
        )
        final = events.get_final_response()
        request_id = events._response.headers["x-request-id"]
    assert summary == final.output[0].summary[0].text != ""
    assert [item.type for item in final.output] == ["reasoning", "function_call"]
    assert orjson.loads(final.output[1].arguments) == {"city": "Paris"}
    usage = final.usage
    assert (
        usage.input_tokens_details.cached_tokens,
        usage.output_tokens_details.reasoning_tokens,
    ) == (
        3,
        40,
    )
    record = settled(request_id)
    assert (record.cache_read_tokens, record.reasoning_tokens) == (3, 40)
    assert record.cost_pico == O4.cost(billed(record))
    assert usage.model_extra["cost"] == pico_to_usd(record.cost_pico)


def test_the_mock_answers_a_function_calls_output(relay_env, mock_channel):
    client = client_for(relay_env)
    first = client.responses.create(model="o4-mini", input="Weather in Paris?", tools=[WEATHER_FN])
    call = first.output[-1]
    answer = client.responses.create(
        model="o4-mini",
        tools=[WEATHER_FN],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"},
        ],
    )
    assert answer.output_text == "The tool returned: 18C and sunny"


# -- the channel's flag -----------------------------------------------------------------------


@pytest.mark.django_db
def test_staff_say_which_channels_speak_the_responses_api(world, fast_passwords):
    channel = ChannelFactory(served_models=["gpt-4o-mini"])
    url = f"/api/channels/{channel.pk}/"
    assert world.staff.get(url).json()["responses_api"] is False
    response = world.staff.patch(url, {"responses_api": True}, format="json")
    assert response.status_code == 200 and response.json()["responses_api"] is True
    assert [c.responses_api for c in channels_enabled() if c.id == channel.pk] == [True]
    # Only OpenAI-compatible channels pass the Responses API through.
    response = world.staff.patch(url, {"type": "anthropic"}, format="json")
    assert response.status_code == 400 and "responses_api" in response.json()
    claude = ChannelFactory(type="anthropic", served_models=["claude-sonnet-4"])
    response = world.staff.patch(
        f"/api/channels/{claude.pk}/", {"responses_api": True}, format="json"
    )
    assert response.status_code == 400 and "responses_api" in response.json()
    form = ChannelForm(
        data={
            "name": "mock",
            "type": "mock",
            "served_models": '["gpt-4o-mini"]',
            "model_mapping": "{}",
            "cost_prices": "{}",
            "priority": 0,
            "weight": 1,
            "status": "enabled",
            "responses_api": True,
        }
    )
    assert not form.is_valid() and "responses_api" in form.errors


@pytest.mark.django_db
def test_a_flag_set_where_it_cannot_apply_is_not_taken_at_its_word():
    """Set behind the API's back, on an Anthropic channel, it changes nothing: its
    requests are still translated and Tollgate keeps their responses."""
    channel = ChannelFactory(type="anthropic", served_models=["claude-sonnet-4"])
    Channel.objects.filter(pk=channel.pk).update(responses_api=True)
    channel_cache_invalidate()
    assert [c.responses_api for c in channels_enabled() if c.id == channel.pk] == [False]


def test_the_embedded_demo_serves_responses_and_completions(relay_env, settings, tmp_path):
    """What ``bash scripts/run`` seeds: the mock channel, a completions model, a key."""
    settings.TOLLGATE_STATE_DIR = tmp_path
    call_command("tollgate_demo", stdout=io.StringIO())
    Channel.objects.filter(pk=relay_env.channel.pk).update(status=Channel.Status.DISABLED)
    channel_cache_invalidate()
    client = client_for(relay_env, orjson.loads((tmp_path / "demo.json").read_bytes())["api_key"])
    first = client.responses.create(model="gpt-4o-mini", input="Hello!")
    with client.responses.stream(
        model="o4-mini", input="And now?", previous_response_id=first.id
    ) as events:
        second = events.get_final_response()
    assert second.output_text.endswith("You said: And now?")
    assert second.usage.model_extra["cost"] != "0.000000"
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="def f(")
    assert completion.choices[0].text.endswith("You wrote: def f(")
    assert completion.usage.model_extra["cost"] != "0.000000"
