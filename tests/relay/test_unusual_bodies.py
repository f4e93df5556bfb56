"""Unusual but valid requests through every translation path.

Each body of the corpus goes to each channel that can serve its endpoint: the
built-in mock and an OpenAI-compatible upstream (a Messages request translated to
chat completions and back), an Anthropic upstream (a Messages request passed
through; a chat request translated to Messages and back), streamed and not.
Whatever the body holds, the answer is a 200 or a 4xx in the endpoint's own
shape, never a 5xx or a cut-off stream; each request leaves exactly one usage
record, and no hold stays open.
"""

import base64

import orjson
import pytest

from billing.models import Hold
from billing.reconcile import ledger_check
from relay.models import Channel
from relay.selectors import channel_cache_invalidate
from tests.support.factories import ChannelFactory
from tests.support.relay import WEATHER
from tests.support.waiting import wait_for
from usage.models import UsageRecord

PDF = base64.b64encode(b"%PDF-1.4 tiny").decode()
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n tiny").decode()


def _messages(*turns, **extra) -> dict:
    return {"model": "gpt-4o-mini", "max_tokens": 64, "messages": list(turns), **extra}


MESSAGES_CORPUS = {
    "system-blocks-with-cache-control": _messages(
        {"role": "user", "content": "hi"},
        system=[
            {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Answer in French."},
        ],
    ),
    "pdf-document": _messages(
        {
            "role": "user",
            "content": [
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                    "title": "Report",
                },
                {"type": "text", "text": "Summarise it."},
            ],
        }
    ),
    "text-document-with-citations": _messages(
        {
            "role": "user",
            "content": [
                {
                    "type": "document",
                    "source": {
                        "type": "text",
                        "media_type": "text/plain",
                        "data": "Grass is green.",
                    },
                    "citations": {"enabled": True},
                },
                {"type": "text", "text": "What colour is grass?"},
            ],
        }
    ),
    "image-by-url-and-base64": _messages(
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
                {"type": "text", "text": "Compare."},
            ],
        }
    ),
    "thinking-history": _messages(
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should call the tool.", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "is_error": True,
                    "content": [
                        {"type": "text", "text": "service down"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                    ],
                },
                {"type": "text", "text": "Try again."},
            ],
        },
        tools=[WEATHER],
        thinking={"type": "enabled", "budget_tokens": 1024},
    ),
    "forced-tool-with-cache-control": _messages(
        {
            "role": "user",
            "content": [{"type": "text", "text": "Paris", "cache_control": {"type": "ephemeral"}}],
        },
        tools=[{**WEATHER, "cache_control": {"type": "ephemeral"}}],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    ),
    "search-result-and-empty-text": _messages(
        {
            "role": "user",
            "content": [
                {
                    "type": "search_result",
                    "source": "https://example.com",
                    "title": "Example",
                    "content": [{"type": "text", "text": "An example page."}],
                },
                {"type": "text", "text": ""},
                {"type": "text", "text": "What does it say? 🙂"},
            ],
        },
        stop_sequences=["\n\nHuman:"],
        top_k=5,
        metadata={"user_id": "user-42"},
    ),
    "assistant-prefill-string": _messages(
        {"role": "user", "content": "Count to three."},
        {"role": "assistant", "content": "One,"},
    ),
    "tool-result-string-and-server-blocks-in-history": _messages(
        {"role": "user", "content": "Search it."},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "server_tool_use",
                    "id": "srvtoolu_1",
                    "name": "web_search",
                    "input": {"query": "x"},
                },
                {
                    "type": "web_search_tool_result",
                    "tool_use_id": "srvtoolu_1",
                    "content": [
                        {"type": "web_search_result", "url": "https://example.com", "title": "x"}
                    ],
                },
                {
                    "type": "text",
                    "text": "Found it.",
                    "citations": [
                        {"type": "web_search_result_location", "url": "https://example.com"}
                    ],
                },
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "done"}],
        },
    ),
}

CHAT_CORPUS = {
    "image-parts-with-detail": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/a.png", "detail": "low"},
                    },
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            }
        ]
    },
    "pdf-file-part": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "file",
                        "file": {
                            "filename": "r.pdf",
                            "file_data": f"data:application/pdf;base64,{PDF}",
                        },
                    },
                    {"type": "text", "text": "Summarise."},
                ],
            }
        ]
    },
    "tool-round-trip-with-odd-arguments": {
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Weather?", "name": "alice"},
            {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{not json"},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                    },
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": [{"type": "text", "text": "rain"}],
            },
            {"role": "tool", "tool_call_id": "call_2", "content": "snow"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": WEATHER["input_schema"],
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
    },
    "legacy-function-role-and-stop-list": {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "sys"}]},
            {"role": "user", "content": "call it"},
            {"role": "assistant", "content": "", "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "42"},
        ],
        "stop": ["END", "STOP"],
        "max_completion_tokens": 40,
        "reasoning_effort": "low",
        "seed": 7,
        "logit_bias": {"50256": -100},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
        "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}},
    },
    "audio-part": {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": PNG, "format": "wav"}}],
            }
        ]
    },
    "stop-string-and-n": {
        "messages": [{"role": "user", "content": "hi"}],
        "stop": "END",
        "n": 2,
        "temperature": 2,
    },
}

# Channel type -> (endpoints it serves, the fixture that fakes it).
PATHS = [
    ("/v1/messages", "mock"),
    ("/v1/messages", "openai"),
    ("/v1/messages", "anthropic"),
    ("/v1/chat/completions", "mock"),
    ("/v1/chat/completions", "openai"),
    ("/v1/chat/completions", "anthropic"),
]


@pytest.fixture
def serve_with(relay_env, upstream, anthropic_upstream):
    def use(channel_type: str) -> None:
        Channel.objects.filter(pk=relay_env.channel.pk).update(status=Channel.Status.DISABLED)
        base_url = {
            "mock": "",
            "openai": upstream.base_url,
            "anthropic": anthropic_upstream.root_url,
        }[channel_type]
        ChannelFactory(type=channel_type, base_url=base_url, served_models=["gpt-4o-mini"])
        channel_cache_invalidate()

    return use


def _cases():
    for endpoint, channel_type in PATHS:
        corpus = MESSAGES_CORPUS if endpoint == "/v1/messages" else CHAT_CORPUS
        for name in corpus:
            for stream in (False, True):
                kind = "stream" if stream else "plain"
                yield pytest.param(
                    endpoint,
                    channel_type,
                    name,
                    stream,
                    id=f"{endpoint.rsplit('/', 1)[-1]}-{channel_type}-{name}-{kind}",
                )


def _assert_in_shape(endpoint: str, response) -> None:
    if response.status_code == 200:
        return
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    if endpoint == "/v1/messages":
        assert body["type"] == "error" and body["error"]["message"], body
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}, body


@pytest.mark.parametrize(("endpoint", "channel_type", "name", "stream"), list(_cases()))
def test_unusual_bodies_are_served_or_refused_cleanly(
    relay_env, serve_with, endpoint, channel_type, name, stream
):
    serve_with(channel_type)
    corpus = MESSAGES_CORPUS if endpoint == "/v1/messages" else CHAT_CORPUS
    body = {"model": "gpt-4o-mini", **corpus[name], "stream": stream}
    request_id = f"odd-{name}-{channel_type}-{stream}"
    headers = {"authorization": f"Bearer {relay_env.key.secret}", "x-request-id": request_id}
    with relay_env.http.stream("POST", endpoint, json=body, headers=headers) as response:
        raw = response.read()
    if response.status_code == 200 and stream:
        events = [e for e in raw.split(b"\n\n") if e.strip()]
        last = events[-1]
        if endpoint == "/v1/messages":
            assert b"message_stop" in last, raw[-500:]
        else:
            assert last == b"data: [DONE]", raw[-500:]
        assert b'"error"' not in raw, raw[-500:]
    elif response.status_code == 200:
        reply = orjson.loads(raw)
        assert "content" in reply if endpoint == "/v1/messages" else "choices" in reply
    else:
        _assert_in_shape(endpoint, response)
    records = wait_for(
        lambda: list(UsageRecord.objects.filter(request_id=request_id, settled_at__isnull=False))
    )
    assert len(records) == 1
    assert records[0].status in ("success", "rejected", "upstream_error"), records[0].status
    assert records[0].http_status == response.status_code
    assert not Hold.objects.filter(status=Hold.Status.OPEN).exists()
    assert ledger_check() == []
