"""``POST /v1/responses`` on channels that do not speak it: translated to chat
completions (most OpenAI-compatible upstreams) or to Anthropic's Messages, both
ways, streamed as the Responses API's own events in their order."""

import openai
import orjson
import pytest

from billing.models import Hold
from billing.pricing import Price, token_components
from core.money import Units, pico_to_usd
from relay.dialects.responses import RESPONSES
from relay.errors import ApiError
from relay.providers.openai.responses import ChatToResponses, responses_to_chat, thinking_content
from relay.tokens import count_text
from tests.support.factories import ModelPriceFactory
from tests.support.relay import error_of
from tests.support.responses import WEATHER_FN, client_for, post, settled, stream, typed_events
from tests.support.upstreams import THOUGHT, signature
from tests.support.waiting import wait_for

MINI = Price.of(model="gpt-4o-mini", components=token_components(input="0.15", output="0.60"))
O4 = Price.of(
    model="o4-mini",
    components=token_components(input="1.10", output="4.40", cache_read="0.275", reasoning="8.80"),
)
SONNET = Price.of(
    model="claude-sonnet-4",
    components=token_components(
        input="3.00", output="15.00", cache_read="0.30", cache_write="3.75"
    ),
)
CACHED_USAGE = {
    "input_tokens": 40,
    "cache_read_input_tokens": 2000,
    "cache_creation_input_tokens": 300,
    "output_tokens": 120,
}
SCHEMA = {
    "type": "json_schema",
    "name": "weather",
    "schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
LONG_REPLY = " ".join(f"word{i}" for i in range(40))


def billed(record) -> Units:
    return Units(
        input=record.input_tokens,
        cache_read=record.cache_read_tokens,
        cache_write=record.cache_write_tokens,
        output=record.output_tokens,
        reasoning=record.reasoning_tokens,
    )


# -- the translation, as functions ------------------------------------------------------


def test_a_responses_request_becomes_a_chat_request():
    body = {
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Answer in French."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,AAA",
                        "detail": "low",
                    },
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"role": "assistant", "content": "Let me check."},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        ],
        "tools": [WEATHER_FN],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
        "text": {"format": SCHEMA, "verbosity": "low"},
        "reasoning": {"effort": "low", "summary": "auto"},
        "max_output_tokens": 300,
        "temperature": 0,
        "store": False,
        "prompt_cache_key": "k",
        "include": ["reasoning.encrypted_content"],
    }
    assert responses_to_chat(body) == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Answer in French."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAA", "detail": "low"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": WEATHER_FN["parameters"],
                },
            }
        ],
        "parallel_tool_calls": False,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": SCHEMA["schema"], "strict": True},
        },
        "reasoning_effort": "low",
        "max_tokens": 300,
        "temperature": 0,
    }


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {"tools": [WEATHER_FN, {"type": "file_search", "vector_store_ids": ["vs"]}]},
            "tools[1].type",
        ),
        ({"tools": [{"type": "custom", "name": "apply_patch"}]}, "tools[0].type"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"input": [{"type": "local_shell_call", "call_id": "c"}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0]",
        ),
    ],
)
def test_what_chat_completions_cannot_take_is_a_400_naming_it(extra, param):
    with pytest.raises(ApiError) as refused:
        responses_to_chat({"model": "m", "input": "Hi", **extra})
    assert (refused.value.status, refused.value.param) == (400, param)
    assert "cannot be sent to this model's provider" in refused.value.message


def test_chat_chunks_become_the_responses_events_in_their_order():
    translator = ChatToResponses({"model": "m", "input": "Hi"}, "public-model")
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"reasoning_content": "Hmm"}}]},
        {"choices": [{"index": 0, "delta": {"content": "Let me "}}]},
        {"choices": [{"index": 0, "delta": {"content": "check."}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "call_9", "function": {"name": "f", "arguments": ""}}
                        ]
                    },
                }
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    events = translator.start()
    for chunk in chunks:
        events += translator.feed(chunk)
    events += translator.finish_events()
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    response = events[-1]["response"]
    assert response["model"] == "public-model"
    assert response["id"] == events[0]["response"]["id"]
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert response["output"] == done
    assert [item["type"] for item in done] == ["reasoning", "message", "function_call"]
    assert done[1]["content"][0]["text"] == "Let me check."
    assert (done[2]["call_id"], done[2]["arguments"]) == ("call_9", "{}")
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["item"]["id"] for e in added] == [item["id"] for item in done]


def test_a_chat_answer_cut_at_its_limit_is_an_incomplete_response(relay_env, upstream):
    upstream.then(
        body={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Once"},
                    "finish_reason": "length",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
        }
    )
    response = client_for(relay_env).responses.create(
        model="gpt-4o-mini", input="Tell me a story", max_output_tokens=1
    )
    assert (response.status, response.incomplete_details.reason) == (
        "incomplete",
        "max_output_tokens",
    )
    assert response.output[0].status == "incomplete"
    assert upstream.requests[-1]["json"]["max_tokens"] == 1
    record = settled(response._request_id)
    assert (record.input_tokens, record.output_tokens) == (12, 1)


# -- a chat-completions upstream ----------------------------------------------------------


def test_a_chat_upstream_answers_a_response_billed_by_every_token_kind(relay_env, upstream):
    response = client_for(relay_env).responses.create(
        model="o4-mini",
        instructions="Be brief.",
        input="Plan a trip",
        max_output_tokens=200,
        reasoning={"effort": "low"},
        text={"format": SCHEMA},
        extra_body={"mock": {"cached_tokens": 5, "reasoning_tokens": 30}},
    )
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["json"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["json"]["max_tokens"] == 200
    assert sent["json"]["reasoning_effort"] == "low"
    assert sent["json"]["response_format"]["json_schema"]["name"] == "weather"
    assert "input" not in sent["json"] and "text" not in sent["json"]
    assert response.model == "o4-mini" and response.object == "response"
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text == "Hello from the Tollgate mock upstream. You said: Plan a trip"
    record = settled(response._request_id)
    usage = response.usage
    assert (
        usage.input_tokens_details.cached_tokens,
        usage.output_tokens_details.reasoning_tokens,
    ) == (
        5,
        30,
    )
    assert billed(record) == Units(
        input=usage.input_tokens - 5, cache_read=5, output=usage.output_tokens - 30, reasoning=30
    )
    assert record.cost_pico == O4.cost(billed(record))
    assert usage.model_extra["cost"] == pico_to_usd(record.cost_pico)


def test_a_chat_upstreams_stream_reads_as_the_responses_events(relay_env, upstream):
    client = client_for(relay_env)
    with client.responses.stream(model="gpt-4o-mini", input="Hello") as events:
        seen = list(events)
        final = events.get_final_response()
        request_id = events._response.headers["x-request-id"]
    assert seen[0].type == "response.created" and seen[-1].type == "response.completed"
    numbers = [e.sequence_number for e in seen]
    assert numbers == list(range(len(seen)))
    text = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
    assert text == final.output_text == "Hello from the Tollgate mock upstream. You said: Hello"
    assert upstream.requests[-1]["json"]["stream_options"] == {"include_usage": True}
    record = settled(request_id)
    assert not record.estimated
    assert final.usage.output_tokens == record.output_tokens
    assert final.usage.model_extra["cost"] == pico_to_usd(record.cost_pico)


@pytest.mark.parametrize("streamed", [False, True], ids=["answer", "stream"])
def test_a_tool_call_round_trips_through_chat_completions(relay_env, upstream, streamed):
    client = client_for(relay_env)

    def create(**body):
        if not streamed:
            return client.responses.create(model="gpt-4o-mini", tools=[WEATHER_FN], **body)
        with client.responses.stream(model="gpt-4o-mini", tools=[WEATHER_FN], **body) as events:
            return events.get_final_response()

    asked = [{"role": "user", "content": "Weather in Paris?"}]
    first = create(input=asked)
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert orjson.loads(call.arguments) == {"city": "Paris"}
    answer = create(
        input=[
            *asked,
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"},
        ]
    )
    assert answer.output_text == "The tool returned: 18C and sunny"
    messages = upstream.requests[-1]["json"]["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == call.call_id
    assert messages[-1] == {
        "role": "tool",
        "tool_call_id": call.call_id,
        "content": "18C and sunny",
    }


def test_a_hosted_tool_a_chat_upstream_cannot_run_is_refused_before_it(relay_env, upstream):
    response = post(
        relay_env, {"model": "gpt-4o-mini", "input": "News?", "tools": [{"type": "web_search"}]}
    )
    error = error_of(response, 400)
    assert error["param"] == "tools[0].type"
    assert "`web_search`" in error["message"]
    assert upstream.calls == 0
    assert settled(response.headers["x-request-id"]).cost_pico == 0
    assert not Hold.objects.filter(status=Hold.Status.OPEN).exists()
    assert relay_env.refresh().balance == 5_000_000


def test_a_client_leaving_a_translated_stream_pays_its_prompt_and_what_it_received(
    relay_env, upstream
):
    upstream.then(chunk_delay=0.1)
    body = {"model": "gpt-4o-mini", "input": "Tell me a story", "mock": {"reply": LONG_REPLY}}
    deltas: list[str] = []
    with stream(relay_env, body) as response:
        for _, event in typed_events(response):
            if event["type"] == "response.output_text.delta":
                deltas.append(event["delta"])
                if len(deltas) == 4:
                    break
    record = settled(response.headers["x-request-id"])
    assert (record.status, record.estimated) == ("cancelled", True)
    assert record.output_tokens == count_text("".join(deltas)) > 0
    assert record.input_tokens == RESPONSES.prompt_tokens({**body, "stream": True})
    assert record.cost_pico == MINI.cost(billed(record))
    wait_for(lambda: upstream.streams_cancelled == 1)


# -- an Anthropic upstream -------------------------------------------------------------------


def test_an_anthropic_upstream_answers_with_thinking_and_its_cache_billed(
    relay_env, claude_channel, anthropic_upstream
):
    anthropic_upstream.then(usage=CACHED_USAGE)
    response = client_for(relay_env).responses.create(
        model="claude-sonnet-4",
        instructions="Be brief.",
        input="Bonjour?",
        max_output_tokens=9000,
        temperature=0.5,
        reasoning={"effort": "medium"},
    )
    sent = anthropic_upstream.requests[-1]["json"]
    assert sent["model"] == "claude-sonnet-4-20250514"
    assert sent["system"] == "Be brief."
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Bonjour?"}]}]
    assert sent["max_tokens"] == 9000
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert "temperature" not in sent  # Anthropic's rule with thinking on
    assert response.output_text == "Bonjour from Claude."
    assert response.model == "claude-sonnet-4"
    record = settled(response._request_id)
    assert billed(record) == Units(input=40, cache_read=2000, cache_write=300, output=120)
    assert record.cost_pico == SONNET.cost(billed(record))
    usage = response.usage
    assert (usage.input_tokens, usage.input_tokens_details.cached_tokens) == (2340, 2000)
    assert usage.model_extra["cost"] == pico_to_usd(record.cost_pico)


def test_an_anthropic_stream_reads_as_the_responses_events(
    relay_env, claude_channel, anthropic_upstream
):
    anthropic_upstream.then(usage=CACHED_USAGE)
    client = client_for(relay_env)
    with client.responses.stream(model="claude-sonnet-4", input="Bonjour?") as events:
        seen = list(events)
        final = events.get_final_response()
        request_id = events._response.headers["x-request-id"]
    assert [e.sequence_number for e in seen] == list(range(len(seen)))
    assert "".join(e.delta for e in seen if e.type == "response.output_text.delta") == (
        "Bonjour from Claude."
    )
    record = settled(request_id)
    assert billed(record) == Units(input=40, cache_read=2000, cache_write=300, output=120)
    assert final.usage.model_extra["cost"] == pico_to_usd(record.cost_pico)


@pytest.mark.parametrize("streamed", [False, True], ids=["answer", "stream"])
def test_a_tool_call_round_trips_through_anthropic(
    relay_env, claude_channel, anthropic_upstream, streamed
):
    client = client_for(relay_env)

    def create(**body):
        if not streamed:
            return client.responses.create(model="claude-sonnet-4", tools=[WEATHER_FN], **body)
        with client.responses.stream(model="claude-sonnet-4", tools=[WEATHER_FN], **body) as events:
            return events.get_final_response()

    first = create(input="Weather in Paris?")
    call = first.output[-1]
    assert (call.type, call.call_id, call.name) == ("function_call", "toolu_01", "get_weather")
    assert orjson.loads(call.arguments) == {"city": "Paris"}
    answer = create(
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C"},
        ]
    )
    assert answer.output_text == "Bonjour from Claude."
    messages = anthropic_upstream.requests[-1]["json"]["messages"]
    assert messages[-2]["content"][0]["type"] == "tool_use"
    assert messages[-1]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C"}
    ]


@pytest.mark.parametrize("streamed", [False, True], ids=["answer", "stream"])
def test_structured_output_on_anthropic_is_a_forced_tool_answered_as_text(
    relay_env, claude_channel, anthropic_upstream, streamed
):
    client = client_for(relay_env)
    body = {"model": "claude-sonnet-4", "input": "Where?", "text": {"format": SCHEMA}}
    if streamed:
        with client.responses.stream(**body) as events:
            response = events.get_final_response()
    else:
        response = client.responses.create(**body)
    sent = anthropic_upstream.requests[-1]["json"]
    assert sent["tools"] == [
        {
            "name": "weather",
            "description": "Answer with this JSON.",
            "input_schema": SCHEMA["schema"],
        }
    ]
    assert sent["tool_choice"] == {"type": "tool", "name": "weather"}
    assert [item.type for item in response.output] == ["message"]
    assert orjson.loads(response.output_text) == {"city": "Paris"}
    assert response.status == "completed"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type"),
        ({"tools": [WEATHER_FN], "text": {"format": SCHEMA}}, "text.format"),
        ({"tools": [{"type": "web_search"}], "text": {"format": SCHEMA}}, "text.format"),
        (
            {"tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}},
            "tool_choice",
        ),
    ],
)
def test_what_anthropic_cannot_take_is_refused_before_it(
    relay_env, claude_channel, anthropic_upstream, extra, param
):
    response = post(relay_env, {"model": "claude-sonnet-4", "input": "Hi", **extra})
    assert error_of(response, 400)["param"] == param
    assert anthropic_upstream.calls == 0


def test_translated_refusals_reach_the_official_client_as_bad_requests(relay_env, upstream):
    with pytest.raises(openai.BadRequestError) as refused:
        client_for(relay_env).responses.create(
            model="gpt-4o-mini", input="Hi", tools=[{"type": "code_interpreter", "container": "c"}]
        )
    assert refused.value.body["param"] == "tools[0].type"


@pytest.mark.parametrize("streamed", [False, True], ids=["answer", "stream"])
def test_thinking_goes_back_to_anthropic_with_a_tool_calls_answer(
    relay_env, claude_channel, anthropic_upstream, streamed
):
    client = client_for(relay_env)
    settings = {
        "model": "claude-sonnet-4",
        "tools": [WEATHER_FN],
        "reasoning": {"effort": "low"},
        "max_output_tokens": 4096,
    }

    def create(**body):
        if not streamed:
            return client.responses.create(**settings, **body)
        with client.responses.stream(**settings, **body) as events:
            return events.get_final_response()

    anthropic_upstream.then(redacted=True)
    first = create(input="Weather in Paris?")
    reasoning, call = first.output[0], first.output[-1]
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == THOUGHT
    assert reasoning.encrypted_content and call.type == "function_call"

    # The output sent back as the next input, as the Agents SDK and Codex do.
    answer = create(
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            *(item.model_dump(exclude_none=True) for item in first.output),
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C"},
        ]
    )
    assert answer.output_text == "Bonjour from Claude."
    sent = anthropic_upstream.requests[-1]["json"]
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    turn = sent["messages"][1]
    assert turn["role"] == "assistant"
    assert turn["content"][:2] == [
        {"type": "thinking", "thinking": THOUGHT, "signature": signature(THOUGHT)},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3"},
    ]
    assert turn["content"][2]["type"] == "tool_use"

    # Or by naming the response this gateway kept.
    answer = create(
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C"}],
    )
    assert answer.output_text == "Bonjour from Claude."
    assert anthropic_upstream.requests[-1]["json"]["messages"][1] == turn


def test_a_tool_answer_without_its_thinking_goes_to_anthropic_with_thinking_off(
    relay_env, claude_channel, anthropic_upstream
):
    answer = client_for(relay_env).responses.create(
        model="claude-sonnet-4",
        tools=[WEATHER_FN],
        reasoning={"effort": "low"},
        max_output_tokens=4096,
        temperature=0.2,
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": "toolu_01",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "toolu_01", "output": "18C"},
        ],
    )

    assert answer.output_text == "Bonjour from Claude."
    sent = anthropic_upstream.requests[-1]["json"]
    assert "thinking" not in sent and sent["temperature"] == 0.2
    assert [b["type"] for b in sent["messages"][1]["content"]] == ["tool_use"]


def test_thinking_blocks_go_to_no_chat_upstream(relay_env, upstream):
    thought = {"type": "thinking", "thinking": THOUGHT, "signature": signature(THOUGHT)}
    body = {
        "model": "gpt-4o-mini",
        "input": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [],
                "encrypted_content": thinking_content([thought]),
            },
            {"role": "assistant", "content": "It is sunny."},
            {"role": "user", "content": "Thanks"},
        ],
    }
    assert responses_to_chat(body)["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": "Thanks"},
    ]
    assert responses_to_chat(body, keep_thinking=True)["messages"][1] == {
        "role": "assistant",
        "content": None,
        "thinking_blocks": [thought],
    }


@pytest.mark.parametrize("streamed", [False, True], ids=["answer", "stream"])
def test_a_web_search_runs_on_anthropic_and_is_billed_per_search(
    relay_env, claude_channel, anthropic_upstream, streamed
):
    tokens = token_components(input="3.00", output="15.00", cache_read="0.30", cache_write="3.75")
    components = [*tokens, {"unit": "tool_call", "rate": "10.00", "tool": "web_search"}]
    ModelPriceFactory(group=relay_env.group, model="claude-sonnet-4", components=components)
    body = {
        "model": "claude-sonnet-4",
        "input": "Weather in Paris?",
        "tools": [
            {
                "type": "web_search",
                "filters": {"allowed_domains": ["weather.example"]},
                "user_location": {"type": "approximate", "city": "Paris", "country": "FR"},
            }
        ],
        "include": ["web_search_call.action.sources"],
    }
    client = client_for(relay_env)
    if streamed:
        with client.responses.stream(**body) as events:
            seen = [e.type for e in events]
            response = events.get_final_response()
            request_id = events._response.headers["x-request-id"]
        assert seen[seen.index("response.output_item.added") :][:5] == [
            "response.output_item.added",
            "response.web_search_call.in_progress",
            "response.web_search_call.searching",
            "response.web_search_call.completed",
            "response.output_item.done",
        ]
    else:
        response = client.responses.create(**body)
        request_id = response._request_id

    assert anthropic_upstream.requests[-1]["json"]["tools"] == [
        {
            "type": "web_search_20250305",
            "name": "web_search",
            "allowed_domains": ["weather.example"],
            "user_location": {"type": "approximate", "city": "Paris", "country": "FR"},
        }
    ]
    search, message = response.output
    assert (search.type, search.status) == ("web_search_call", "completed")
    assert search.action.query == "weather Paris"
    assert [s.url for s in search.action.sources] == ["https://weather.example/paris"]
    assert message.type == "message" and response.output_text == "Bonjour from Claude."
    record = settled(request_id)
    assert record.unit_details["tool_calls"] == {"web_search": 1}
    # $10 per 1,000 searches: a cent on top of the tokens, as Anthropic counted it.
    assert record.cost_pico == SONNET.cost(billed(record)) + 10**10
    assert response.usage.model_extra["tool_calls"] == {"web_search": 1}
    assert response.usage.model_extra["cost"] == pico_to_usd(record.cost_pico)
