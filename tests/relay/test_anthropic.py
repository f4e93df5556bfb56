"""Anthropic both ways: chat completions to an Anthropic channel, and /v1/messages."""

from decimal import Decimal

import anthropic
import openai
import orjson
import pytest

from billing.pricing import Price, token_components
from core.money import Units, micro_to_usd, pico_to_usd
from relay.models import Channel
from relay.providers.anthropic import chat as chat_over_anthropic
from relay.providers.openai import messages as messages_over_chat
from relay.selectors import channel_cache_invalidate
from tests.support.factories import ChannelFactory, ModelPriceFactory
from tests.support.relay import WEATHER
from tests.support.upstreams import THOUGHT, signature
from tests.support.waiting import wait_for
from usage.models import UsageRecord

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
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


# -- translation, as pure functions ---------------------------------------------------


def test_chat_request_becomes_a_messages_request():
    body = {
        "model": "x",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        ],
        "tools": TOOLS,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "temperature": 1.7,
        "stop": "END",
        "max_completion_tokens": 99,
        "user": "u-1",
    }
    out = chat_over_anthropic.chat_to_anthropic(body, "claude-up")
    assert out["model"] == "claude-up" and out["system"] == "Be brief." and out["max_tokens"] == 99
    assert [m["role"] for m in out["messages"]] == [
        "user",
        "assistant",
        "user",
    ]  # merged to alternate
    assert out["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
    }
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"}
    ]
    assert out["tools"][0]["input_schema"]["required"] == ["city"]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["temperature"] == 1.0 and out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-1"}


def test_anthropic_stream_becomes_chat_chunks_with_cumulative_usage():
    translator = chat_over_anthropic.AnthropicToChat()
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "model": "claude",
                "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a":1}'},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 3},
        },
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    ]
    chunks = [c for e in events for c in translator.feed(e)]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"content": "Hi"}
    assert deltas[2]["tool_calls"][0] == {
        "index": 0,
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    assert deltas[3]["tool_calls"][0]["function"]["arguments"] == '{"a":1}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 15
    assert chunks[-1]["usage"]["completion_tokens"] == 7  # the last cumulative value, not 1+3+7


def test_chat_chunks_become_anthropic_events_in_order():
    translator = messages_over_chat.ChatToMessages("m")
    events = [
        event
        for c in [
            {
                "model": "m",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
            },
            {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
            {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}
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
        for event in translator.feed(c)
    ] + translator.finish(Units(input=5, output=2))
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[5]["content_block"]["type"] == "tool_use" and events[5]["index"] == 1
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"]["output_tokens"] == 2


# -- end to end ------------------------------------------------------------------------


@pytest.fixture
def claude(relay_env, anthropic_upstream):
    ModelPriceFactory(
        group=relay_env.group,
        model="claude-sonnet-4",
        input_per_m=Decimal("3.00"),
        output_per_m=Decimal("15.00"),
        cache_read_per_m=Decimal("0.30"),
        cache_write_per_m=Decimal("3.75"),
    )
    channel = ChannelFactory(
        name="anthropic",
        type="anthropic",
        base_url=anthropic_upstream.root_url,
        served_models=["claude-sonnet-4"],
        model_mapping={"claude-sonnet-4": "claude-sonnet-4-20250514"},
        api_key="sk-ant-upstream-secret-42",
    )
    channel_cache_invalidate()
    return channel


def settled(request_id: str) -> UsageRecord:
    return wait_for(
        lambda: UsageRecord.objects.filter(request_id=request_id, settled_at__isnull=False).first()
    )


def test_chat_completion_through_an_anthropic_channel_bills_cache_reads_and_writes(
    relay_env, anthropic_upstream, claude
):
    anthropic_upstream.then(usage=CACHED_USAGE)
    client = openai.OpenAI(
        base_url=f"{relay_env.url}/v1", api_key=relay_env.key.secret, max_retries=0
    )
    reply = client.chat.completions.create(
        model="claude-sonnet-4",
        messages=[{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi"}],
        max_tokens=200,
    )
    sent = anthropic_upstream.requests[-1]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == "sk-ant-upstream-secret-42"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert (
        sent["json"]["model"] == "claude-sonnet-4-20250514" and sent["json"]["system"] == "Be nice."
    )
    assert reply.choices[0].message.content == "Bonjour from Claude."
    assert reply.usage.prompt_tokens == 2340 and reply.usage.completion_tokens == 120
    assert reply.usage.prompt_tokens_details.cached_tokens == 2000
    record = settled(reply._request_id)
    assert (
        record.input_tokens,
        record.cache_read_tokens,
        record.cache_write_tokens,
        record.output_tokens,
    ) == (40, 2000, 300, 120)
    # 40*3 + 2000*0.30 + 300*3.75 + 120*15 = 120 + 600 + 1125 + 1800
    assert (
        record.cost_pico
        == SONNET.cost(Units(input=40, cache_read=2000, cache_write=300, output=120))
        == 3645 * 10**6
    )
    assert reply.usage.model_extra["cost"] == micro_to_usd(3645)


def test_streamed_tool_call_through_an_anthropic_channel(relay_env, anthropic_upstream, claude):
    anthropic_upstream.then(usage=CACHED_USAGE)
    client = openai.OpenAI(
        base_url=f"{relay_env.url}/v1", api_key=relay_env.key.secret, max_retries=0
    )
    chunks = list(
        client.chat.completions.create(
            model="claude-sonnet-4",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert anthropic_upstream.requests[-1]["json"]["tools"][0]["name"] == "get_weather"
    calls = [
        c.choices[0].delta.tool_calls[0]
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    ]
    assert calls[0].function.name == "get_weather"
    assert orjson.loads("".join(c.function.arguments for c in calls)) == {"city": "Paris"}
    assert [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ] == ["tool_calls"]
    usage = chunks[-1].usage
    assert usage.prompt_tokens == 2340 and usage.completion_tokens == 120
    record = wait_for(
        lambda: UsageRecord.objects.filter(stream=True, settled_at__isnull=False).first()
    )
    assert record.estimated is False and record.cost_pico == 3645 * 10**6


def test_official_anthropic_client_against_an_anthropic_channel(
    relay_env, anthropic_upstream, claude
):
    client = anthropic.Anthropic(
        base_url=relay_env.url, api_key=relay_env.key.secret, max_retries=0
    )
    anthropic_upstream.then(usage=CACHED_USAGE)
    message = client.messages.create(
        model="claude-sonnet-4",
        max_tokens=100,
        system="Short answers.",
        messages=[{"role": "user", "content": "Hi"}],
    )
    assert message.content[0].text == "Bonjour from Claude."
    assert message.usage.cache_read_input_tokens == 2000
    sent = anthropic_upstream.requests[-1]["json"]
    assert sent["model"] == "claude-sonnet-4-20250514" and sent["system"] == "Short answers."
    record = settled(message._request_id)
    assert record.endpoint == "messages" and record.cost_pico == 3645 * 10**6

    anthropic_upstream.then(usage=CACHED_USAGE)
    with client.messages.stream(
        model="claude-sonnet-4", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Bonjour from Claude."
    assert final.usage.output_tokens == 120
    record = wait_for(
        lambda: UsageRecord.objects.filter(
            endpoint="messages", stream=True, settled_at__isnull=False
        ).first()
    )
    assert record.estimated is False
    assert (record.cache_read_tokens, record.cache_write_tokens, record.output_tokens) == (
        2000,
        300,
        120,
    )


def test_anthropic_stream_cut_short_bills_the_reported_prompt_and_the_delivered_text(
    relay_env, anthropic_upstream, claude
):
    anthropic_upstream.then(usage=CACHED_USAGE, break_before_end=True)
    client = anthropic.Anthropic(
        base_url=relay_env.url, api_key=relay_env.key.secret, max_retries=0
    )
    events = []
    with client.messages.create(
        model="claude-sonnet-4",
        max_tokens=100,
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
    ) as stream:
        try:
            for event in stream:
                events.append(event)
        except anthropic.APIStatusError:
            pass
    record = wait_for(
        lambda: UsageRecord.objects.filter(endpoint="messages", settled_at__isnull=False).first()
    )
    assert record.status == "interrupted" and record.estimated is True
    # The prompt came in message_start (cache kinds included); the output is counted.
    assert (record.input_tokens, record.cache_read_tokens, record.cache_write_tokens) == (
        40,
        2000,
        300,
    )
    from relay.tokens import count_text

    assert record.output_tokens == count_text("Bonjour from Claude.")


def test_anthropic_client_against_an_openai_channel_with_a_tool_round_trip(relay_env, upstream):
    client = anthropic.Anthropic(
        base_url=relay_env.url, api_key=relay_env.key.secret, max_retries=0
    )
    tools = [
        {
            "name": "get_weather",
            "description": "d",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    first = client.messages.create(
        model="gpt-4o-mini",
        max_tokens=50,
        tools=tools,
        messages=[{"role": "user", "content": "Weather?"}],
    )
    sent = upstream.requests[-1]["json"]
    assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["max_tokens"] == 50
    use = first.content[0]
    assert (
        first.stop_reason == "tool_use"
        and use.type == "tool_use"
        and use.input == {"city": "Paris"}
    )

    follow = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [use.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21C"}],
        },
    ]
    second = client.messages.create(
        model="gpt-4o-mini", max_tokens=50, tools=tools, messages=follow
    )
    assert second.content[0].text == "The tool returned: 21C"
    assert upstream.requests[-1]["json"]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": use.id,
        "content": "21C",
    }
    record = settled(second._request_id)
    assert record.cost_pico > 0 and second.usage.output_tokens == record.output_tokens

    with client.messages.stream(
        model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith("Hello from the Tollgate mock upstream")
    assert final.usage.output_tokens > 0


def test_documents_and_search_results_reach_a_chat_upstream_translated(relay_env, upstream):
    client = anthropic.Anthropic(
        base_url=relay_env.url, api_key=relay_env.key.secret, max_retries=0
    )
    client.messages.create(
        model="gpt-4o-mini",
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "title": "report.pdf",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": "JVBE",
                        },
                    },
                    {
                        "type": "document",
                        "title": "Facts",
                        "source": {"type": "text", "media_type": "text/plain", "data": "Grass."},
                    },
                    {
                        "type": "search_result",
                        "title": "Example",
                        "source": "https://example.com",
                        "content": [{"type": "text", "text": "A page."}],
                    },
                    {"type": "text", "text": "Summarise."},
                ],
            }
        ],
    )
    parts = upstream.requests[-1]["json"]["messages"][-1]["content"]
    assert parts == [
        {
            "type": "file",
            "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBE"},
        },
        {"type": "text", "text": "Facts\n\nGrass."},
        {"type": "text", "text": "Example\nhttps://example.com\nA page."},
        {"type": "text", "text": "Summarise."},
    ]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]},
            "tools.0.type",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "video", "file_id": "f"}]}]},
            "messages.0.content.0.type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "read"},
                            {"type": "document", "source": {"type": "url", "url": "https://x"}},
                        ],
                    }
                ]
            },
            "messages.0.content.1.source.type",
        ),
    ],
)
def test_what_a_chat_upstream_cannot_take_is_a_400_naming_the_block(
    relay_env, upstream, extra, param
):
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }
    response = relay_env.http.post(
        "/v1/messages",
        json=body,
        headers={"x-api-key": relay_env.key.secret, "x-request-id": f"cannot-{param}"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["message"].startswith(f"{param}: ")
    assert upstream.calls == 0
    record = settled(f"cannot-{param}")
    assert (record.status, record.cost_pico) == ("rejected", 0)
    assert relay_env.refresh().held == 0


def test_anthropic_shaped_errors_for_the_anthropic_client(relay_env, upstream):
    bad = anthropic.Anthropic(base_url=relay_env.url, api_key="sk-tg-nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(
            model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    client = anthropic.Anthropic(
        base_url=relay_env.url, api_key=relay_env.key.secret, max_retries=0
    )
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(
            model="gpt-4o-mini", max_tokens=0, messages=[{"role": "user", "content": "x"}]
        )
    assert exc.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(
            model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    Channel.objects.update(status="disabled")
    channel_cache_invalidate()
    with pytest.raises(anthropic.InternalServerError) as exc:
        client.messages.create(
            model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert exc.value.status_code == 503
    assert upstream.calls == 0


def test_embeddings_are_relayed_and_billed_at_the_input_price(relay_env, upstream):
    client = openai.OpenAI(
        base_url=f"{relay_env.url}/v1", api_key=relay_env.key.secret, max_retries=0
    )
    result = client.embeddings.create(model="gpt-4o-mini", input=["first text", "second"])
    assert upstream.requests[-1]["path"] == "/v1/embeddings"
    assert len(result.data) == 2 and len(result.data[0].embedding) == 16
    record = settled(result._request_id)
    assert record.endpoint == "embeddings"
    assert record.input_tokens == result.usage.prompt_tokens > 0 and record.output_tokens == 0
    assert record.cost_pico == Price.of(
        model="m", components=token_components(input="0.15", output="0.60")
    ).cost(Units(input=record.input_tokens))
    bad = relay_env.http.post(
        "/v1/embeddings",
        json={"model": "gpt-4o-mini", "input": []},
        headers={"authorization": f"Bearer {relay_env.key.secret}"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"


def test_messages_on_a_chat_channel_name_the_model_asked_for_and_end_a_forced_tool_call(
    relay_env, upstream
):
    Channel.objects.filter(pk=relay_env.channel.pk).update(
        model_mapping={"gpt-4o-mini": "upstream-mini-2025-01"}
    )
    channel_cache_invalidate()
    client = anthropic.Anthropic(
        base_url=relay_env.url, api_key=relay_env.key.secret, max_retries=0
    )
    forced = {
        "model": "gpt-4o-mini",
        "max_tokens": 50,
        "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    }
    message = client.messages.create(**forced)
    assert upstream.requests[-1]["json"]["model"] == "upstream-mini-2025-01"
    # OpenAI ends a named forced call with finish_reason "stop"; the Messages client
    # is told the turn ended for its tool.
    assert (message.model, message.stop_reason) == ("gpt-4o-mini", "tool_use")
    assert message.content[0].type == "tool_use"
    with client.messages.stream(**forced) as stream:
        final = stream.get_final_message()
    assert (final.model, final.stop_reason) == ("gpt-4o-mini", "tool_use")
    assert final.content[0].input == {"city": "Paris"}


def test_anthropic_beta_and_version_headers_reach_an_anthropic_channel(
    relay_env, anthropic_upstream, upstream
):
    ChannelFactory(
        type="anthropic",
        base_url=anthropic_upstream.root_url,
        served_models=["claude-sonnet-4"],
        api_key="sk-ant-channel-key-0123456789",
    )
    ModelPriceFactory(group=relay_env.group, model="claude-sonnet-4")
    channel_cache_invalidate()
    client = anthropic.Anthropic(
        base_url=relay_env.url, api_key=relay_env.key.secret, max_retries=0
    )
    beta = "context-1m-2025-08-07,interleaved-thinking-2025-05-14"
    client.messages.create(
        model="claude-sonnet-4",
        max_tokens=20,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": beta, "anthropic-version": "2023-06-01"},
    )
    sent = anthropic_upstream.requests[-1]["headers"]
    assert sent["anthropic-beta"] == beta
    assert sent["anthropic-version"] == "2023-06-01"
    assert sent["x-api-key"] == "sk-ant-channel-key-0123456789"
    # The header means nothing to an OpenAI-compatible upstream: it is not sent there.
    client.messages.create(
        model="gpt-4o-mini",
        max_tokens=20,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": beta},
    )
    assert "anthropic-beta" not in upstream.requests[-1]["headers"]


def test_a_native_anthropic_stream_passes_events_through_and_ends_with_the_cost(
    relay_env, anthropic_upstream, claude
):
    anthropic_upstream.then(usage=CACHED_USAGE)
    with relay_env.http.stream(
        "POST",
        "/v1/messages",
        json={
            "model": "claude-sonnet-4",
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
        },
        headers={"x-api-key": relay_env.key.secret},
    ) as response:
        raw = b"".join(response.iter_bytes())
    events = [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]
    kinds = [e["type"] for e in events]
    # The upstream's own events, its ping included, then one closing delta and stop.
    assert kinds[:2] == ["message_start", "ping"]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("message_delta") == 1 and kinds.count("message_stop") == 1
    assert events[0]["message"]["usage"]["cache_read_input_tokens"] == 2000
    record = settled(response.headers["x-request-id"])
    assert (record.estimated, record.output_tokens) == (False, 120)
    final = events[-2]
    assert final["delta"]["stop_reason"] == "end_turn"
    assert final["usage"]["output_tokens"] == 120
    assert final["usage"]["cost"] == pico_to_usd(record.cost_pico) == micro_to_usd(3645)


@pytest.mark.parametrize("streamed", [False, True], ids=["answer", "stream"])
def test_signed_thinking_comes_back_with_chat_completions_and_goes_back_to_anthropic(
    relay_env, anthropic_upstream, claude, streamed
):
    client = openai.OpenAI(
        base_url=f"{relay_env.url}/v1", api_key=relay_env.key.secret, max_retries=0
    )
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    asked = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(
        model="claude-sonnet-4",
        messages=asked,
        tools=TOOLS,
        max_tokens=4096,
        stream=streamed,
        extra_body=thinking,
    )
    if streamed:
        deltas = [c.choices[0].delta for c in first if c.choices]
        reasoning = "".join(d.model_extra.get("reasoning_content") or "" for d in deltas)
        blocks = [b for d in deltas for b in d.model_extra.get("thinking_blocks") or []]
        calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
        call = {"id": calls[0].id, "name": calls[0].function.name}
        arguments = "".join(c.function.arguments for c in calls)
    else:
        message = first.choices[0].message
        reasoning = message.model_extra["reasoning_content"]
        blocks = message.model_extra["thinking_blocks"]
        call = {"id": message.tool_calls[0].id, "name": message.tool_calls[0].function.name}
        arguments = message.tool_calls[0].function.arguments
    assert reasoning == THOUGHT
    # The whole block, signature included, as Anthropic sent it.
    assert blocks == [{"type": "thinking", "thinking": THOUGHT, "signature": signature(THOUGHT)}]

    answer = client.chat.completions.create(
        model="claude-sonnet-4",
        messages=[
            *asked,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": arguments},
                    }
                ],
                "thinking_blocks": blocks,
            },
            {"role": "tool", "tool_call_id": call["id"], "content": "18C"},
        ],
        tools=TOOLS,
        max_tokens=4096,
        extra_body=thinking,
    )

    assert answer.choices[0].message.content == "Bonjour from Claude."
    sent = anthropic_upstream.requests[-1]["json"]["messages"][1]["content"]
    assert [b["type"] for b in sent] == ["thinking", "tool_use"]
    assert sent[0]["signature"] == signature(THOUGHT)


def test_a_thinking_block_without_its_signature_is_a_400_before_anthropic(
    relay_env, anthropic_upstream, claude
):
    client = openai.OpenAI(
        base_url=f"{relay_env.url}/v1", api_key=relay_env.key.secret, max_retries=0
    )
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="claude-sonnet-4",
            messages=[
                {"role": "user", "content": "Hi"},
                {
                    "role": "assistant",
                    "content": "Hello",
                    "thinking_blocks": [{"type": "thinking", "thinking": "hm"}],
                },
                {"role": "user", "content": "Again"},
            ],
        )
    assert refused.value.param == "messages[1].thinking_blocks[0]"
    assert anthropic_upstream.calls == 0
