"""``stream: true``: bytes as they arrive, and a bill for exactly what was delivered."""

import time

import httpx
import openai
import orjson

from billing.models import Transaction
from billing.pricing import Price, token_components
from core.money import Units, pico_to_usd
from relay.tokens import count_messages, count_text
from tests.support.factories import ChannelFactory
from tests.support.relay import chat
from tests.support.waiting import wait_for
from usage.models import UsageRecord

LONG_REPLY = " ".join(f"word{i}" for i in range(40))
PRICE = Price.of(model="gpt-4o-mini", components=token_components(input="0.15", output="0.60"))


def sse_events(response: httpx.Response):
    """Parsed ``data:`` payloads of an SSE response, as they arrive."""
    buffer = b""
    for chunk in response.iter_raw():
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            assert event.startswith(b"data: "), event
            payload = event[6:]
            yield "[DONE]" if payload == b"[DONE]" else orjson.loads(payload)


def stream(env, body, **headers):
    return env.http.stream(
        "POST",
        "/v1/chat/completions",
        json={**body, "stream": True},
        headers={"authorization": f"Bearer {env.key.secret}", **headers},
    )


def record_for(response) -> UsageRecord:
    rid = response.headers["x-request-id"]
    return wait_for(
        lambda: UsageRecord.objects.filter(request_id=rid, settled_at__isnull=False).first()
    )


def content_of(events) -> str:
    return "".join(
        c["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and "choices" in e
        for c in e["choices"]
    )


def test_first_chunk_reaches_the_client_before_the_upstream_has_finished(relay_env, upstream):
    upstream.then(chunk_delay=0.2)
    started = time.monotonic()
    with stream(relay_env, chat()) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
        first = next(events)
        first_at = time.monotonic() - started
        upstream_done_at_first_chunk = upstream.streams_finished
        rest = list(events)
    total = time.monotonic() - started
    assert first["object"] == "chat.completion.chunk"
    assert upstream_done_at_first_chunk == 0
    assert first_at < 0.5 < 2.0 < total  # ~13 chunks at 0.2 s each
    assert rest[-1] == "[DONE]"
    record = record_for(response)
    assert record.status == "success" and record.stream is True
    assert record.ttft_ms is not None and record.ttft_ms < 500


def test_usage_chunk_only_when_asked_but_the_upstream_is_always_asked(relay_env, upstream):
    with stream(relay_env, chat()) as response:
        events = list(sse_events(response))
    assert upstream.requests[-1]["json"]["stream_options"] == {"include_usage": True}
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])
    quiet = record_for(response)
    assert quiet.estimated is False and quiet.cost_pico > 0

    with stream(relay_env, chat(stream_options={"include_usage": True})) as response:
        events = list(sse_events(response))
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    record = record_for(response)
    usage = usage_chunk["usage"]
    assert usage["cost"] == pico_to_usd(record.cost_pico)
    assert (usage["input_tokens"], usage["output_tokens"]) == (
        record.prompt_tokens,
        record.completion_tokens,
    )
    assert usage["prompt_tokens"] == record.prompt_tokens
    assert record.cost_pico == PRICE.cost(
        Units(input=record.input_tokens, output=record.output_tokens)
    )
    charge = Transaction.objects.filter(kind="charge").order_by("-pk").first()
    assert charge.entries.get(ledger_account__kind="customer").amount == -(
        record.cost_pico // 10**6
    )


def test_chunks_keep_the_upstreams_shape_byte_for_byte(relay_env, upstream):
    body = chat(
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }
        ]
    )
    with stream(relay_env, body) as response:
        raw = response.read()
    # Everything the mock sends but its usage chunk comes through unchanged.
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    parsed = [orjson.loads(e[6:]) for e in events[:-1]]
    calls = [
        c["delta"]["tool_calls"][0]
        for e in parsed
        for c in e["choices"]
        if c["delta"].get("tool_calls")
    ]
    assert calls[0]["function"]["name"] == "lookup"
    assert orjson.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Paris"}
    assert parsed[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_usage_on_a_content_chunk_is_still_read(relay_env, upstream):
    upstream.then(usage_on_content=True)
    with stream(relay_env, chat()) as response:
        events = list(sse_events(response))
    record = record_for(response)
    assert record.estimated is False
    assert record.input_tokens == count_messages(chat()["messages"])
    assert all("usage" not in e for e in events if isinstance(e, dict))


def test_client_disconnect_cancels_upstream_and_bills_prompt_plus_delivered(relay_env, upstream):
    upstream.then(chunk_delay=0.1)
    body = chat(mock={"reply": LONG_REPLY})
    received = []
    with stream(relay_env, body) as response:
        for event in sse_events(response):
            received.append(event)
            if len([e for e in received if e["choices"][0]["delta"].get("content")]) == 5:
                break  # leaving the block closes the connection mid-stream
    record = record_for(response)
    delivered = content_of(received)
    assert delivered == " ".join(LONG_REPLY.split()[:5])
    assert record.status == "cancelled"
    assert record.estimated is True
    assert record.output_tokens == count_text(delivered)
    assert record.input_tokens == count_messages(body["messages"])
    assert record.cost_pico == PRICE.cost(
        Units(input=record.input_tokens, output=record.output_tokens)
    )
    wait_for(lambda: upstream.streams_cancelled == 1)
    assert upstream.streams_finished == 0
    assert relay_env.refresh().balance == 5_000_000 - record.cost_pico // 10**6


def test_upstream_breaking_mid_stream_sends_an_error_event_and_bills_what_was_delivered(
    relay_env, upstream
):
    upstream.then(break_after=4)
    with stream(relay_env, chat(mock={"reply": LONG_REPLY})) as response:
        events = list(sse_events(response))
    error = events[-1]["error"]
    assert error["type"] == "upstream_error"
    assert response.headers["x-request-id"] in error["message"]
    assert "[DONE]" not in events
    record = record_for(response)
    assert record.status == "interrupted"
    assert record.estimated is True
    delivered = content_of(events[:-1])
    assert delivered == " ".join(LONG_REPLY.split()[:3])  # role chunk + 3 words
    assert record.output_tokens == count_text(delivered)
    assert record.cost_pico == PRICE.cost(
        Units(input=record.input_tokens, output=record.output_tokens)
    )
    assert relay_env.refresh().balance == 5_000_000 - record.cost_pico // 10**6


def test_upstream_error_event_mid_stream_is_an_interruption(relay_env, upstream):
    upstream.then(error_after=3)
    with stream(relay_env, chat()) as response:
        events = list(sse_events(response))
    assert events[-1]["error"]["code"] == "upstream_stream_failed"
    record = record_for(response)
    assert record.status == "interrupted"
    assert record.output_tokens == count_text(content_of(events[:-1]))


def test_upstream_going_silent_mid_stream_times_out_as_an_interruption(relay_env, upstream):
    relay_env.channel.request_timeout = 0.3
    relay_env.channel.save()
    upstream.then(stall_after=4)
    with stream(relay_env, chat()) as response:
        events = list(sse_events(response))
    assert events[-1]["error"]["code"] == "upstream_timeout"
    record = record_for(response)
    assert record.status == "interrupted"
    assert record.output_tokens == count_text(content_of(events[:-1])) > 0
    wait_for(lambda: upstream.streams_cancelled == 1)


def test_stream_without_upstream_usage_is_counted_locally(relay_env, upstream):
    body = chat(mock={"usage": False}, stream_options={"include_usage": True})
    with stream(relay_env, body) as response:
        events = list(sse_events(response))
    record = record_for(response)
    assert record.status == "success" and record.estimated is True
    text = content_of(events)
    assert record.output_tokens == count_text(text)
    assert events[-2]["usage"]["output_tokens"] == record.output_tokens
    assert events[-2]["usage"]["cost"] == pico_to_usd(record.cost_pico)


def test_all_n_choices_are_billed(relay_env, upstream):
    with stream(relay_env, chat(n=3, mock={"usage": False})) as response:
        events = list(sse_events(response))
    per_choice = {
        i: "".join(
            c["delta"].get("content") or ""
            for e in events
            if isinstance(e, dict)
            for c in e["choices"]
            if c["index"] == i
        )
        for i in range(3)
    }
    assert len(set(per_choice.values())) == 1 and per_choice[0]
    record = record_for(response)
    assert record.estimated is True
    assert record.output_tokens == 3 * count_text(per_choice[0])

    with stream(relay_env, chat(n=3)) as response:
        response.read()
    record = record_for(response)
    assert record.estimated is False
    assert record.output_tokens == 3 * count_text(per_choice[0])


def test_cached_and_reasoning_tokens_in_a_stream_are_billed_at_their_prices(relay_env, upstream):
    body = {**chat(mock={"cached_tokens": 6, "reasoning_tokens": 50}), "model": "o4-mini"}
    with stream(relay_env, body) as response:
        response.read()
    record = record_for(response)
    prompt = count_messages(body["messages"])
    assert (record.cache_read_tokens, record.input_tokens) == (6, prompt - 6)
    assert record.reasoning_tokens == 50
    o4 = Price.of(
        model="o4-mini",
        components=token_components(
            input="1.10", output="4.40", cache_read="0.275", reasoning="8.80"
        ),
    )
    assert record.cost_pico == o4.cost(
        Units(input=prompt - 6, cache_read=6, output=record.output_tokens, reasoning=50)
    )


def test_stream_fails_over_until_a_first_chunk_arrives(relay_env, upstream):
    relay_env.channel.priority = 10
    relay_env.channel.save()
    backup = ChannelFactory(base_url=upstream.base_url, served_models=["gpt-4o-mini"], priority=5)
    third = ChannelFactory(base_url=upstream.base_url, served_models=["gpt-4o-mini"], priority=0)
    upstream.then(status=503).then(
        break_after=0
    )  # primary refuses, backup dies before its first chunk
    with stream(relay_env, chat()) as response:
        events = list(sse_events(response))
    assert events[-1] == "[DONE]"
    record = record_for(response)
    assert [a["channel"] for a in record.attempts] == [relay_env.channel.id, backup.id, third.id]
    assert record.channel_id == third.id


def test_stream_that_no_channel_can_open_is_a_plain_error_and_free(relay_env, upstream):
    upstream.then(status=500).then(status=500)
    with stream(relay_env, chat()) as response:
        body = response.read()
    assert response.status_code == 502
    assert orjson.loads(body)["error"]["type"] == "upstream_error"
    assert record_for(response).cost_pico == 0
    assert relay_env.refresh().balance == 5_000_000


def test_tool_call_round_trip_with_the_openai_client_streaming_and_not(relay_env, upstream):
    client = openai.OpenAI(
        base_url=f"{relay_env.url}/v1", api_key=relay_env.key.secret, max_retries=0
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages = [{"role": "user", "content": "Weather in Paris?"}]

    first = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, tools=tools, tool_choice="auto"
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, orjson.loads(call.function.arguments)) == (
        "get_weather",
        {"city": "Paris"},
    )

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            tools=tools,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [
        c.choices[0].delta.tool_calls[0]
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    ]
    assert deltas[0].function.name == "get_weather"
    assert orjson.loads("".join(d.function.arguments for d in deltas)) == {"city": "Paris"}
    assert chunks[-1].usage.model_extra["cost"] is not None

    follow_up = [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=follow_up, tools=tools)
    assert answer.choices[0].message.content == "The tool returned: 18C and sunny"
    streamed = client.chat.completions.create(
        model="gpt-4o-mini", messages=follow_up, tools=tools, stream=True
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        == "The tool returned: 18C and sunny"
    )
    assert upstream.requests[-1]["json"]["messages"][-1]["tool_call_id"] == call.id


def test_request_fields_pass_through_to_the_upstream_streaming_and_not(relay_env, upstream):
    fields = {
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
            }
        ],
        "tool_choice": "none",
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "strict": True,
                "schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
            },
        },
        "max_completion_tokens": 64,
        "seed": 7,
        "stop": ["\n\n"],
        "logprobs": True,
        "top_logprobs": 2,
        "user": "u-1",
        "metadata": {"team": "search"},
        "future_field": [0, False, None],
    }
    assert relay_env.post(chat(**fields)).status_code == 200
    assert upstream.requests[-1]["json"] == chat(**fields)
    with stream(relay_env, chat(**fields, stream_options={"include_usage": False})) as response:
        response.read()
    sent = upstream.requests[-1]["json"]
    assert sent == {**chat(**fields), "stream": True, "stream_options": {"include_usage": True}}
    assert relay_env.post(chat(response_format={"type": "json_object"})).status_code == 200
    assert upstream.requests[-1]["json"]["response_format"] == {"type": "json_object"}


def test_a_long_stream_vouches_for_its_hold_while_it_runs(relay_env, upstream, settings):
    from billing.models import Hold
    from billing.reconcile import ledger_check
    from core.inflight import holds_in_flight

    settings.TOLLGATE = {**settings.TOLLGATE, "STALE_HOLD_SECONDS": 0}
    upstream.then(chunk_delay=0.2)  # an 8 s stream
    with stream(relay_env, chat(LONG_REPLY, mock={"reply": LONG_REPLY})) as response:
        events = sse_events(response)
        next(events)
        hold = Hold.objects.get(status=Hold.Status.OPEN)
        # The web process writes its requests in flight out every few seconds.
        wait_for(lambda: hold.pk in (holds_in_flight() or set()), timeout=8)
        assert ledger_check() == []
        for _ in events:
            pass
    wait_for(lambda: not Hold.objects.filter(status=Hold.Status.OPEN).exists())
    assert ledger_check() == []
