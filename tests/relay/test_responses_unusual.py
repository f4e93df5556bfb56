"""Unusual but valid bodies for ``/v1/responses`` and ``/v1/completions`` through every
channel that serves them: one speaking the Responses API (passed through), a
chat-completions one and an Anthropic one (translated), and the built-in mock;
streamed and not. Whatever the body holds, the answer is a 200 or a 400 naming
what the channel cannot take, in OpenAI's shape, never a 5xx or a stream cut off;
each request leaves exactly one usage record, and no hold stays open."""

import base64

import orjson
import pytest

from billing.models import Hold
from billing.reconcile import ledger_check
from relay.dialects.responses import TERMINAL
from relay.models import Channel
from relay.selectors import channel_cache_invalidate
from tests.support.factories import ChannelFactory, ModelPriceFactory
from tests.support.responses import WEATHER_FN
from tests.support.waiting import wait_for
from usage.models import UsageRecord

PDF = base64.b64encode(b"%PDF-1.4 tiny").decode()
SCHEMA = {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": False}

RESPONSES_CORPUS = {
    "string-with-instructions-and-unicode": {
        "input": "Café? 🙂 \u2028 end",
        "instructions": "Réponds en français.",
    },
    "parts-image-and-pdf": {
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Look"},
                    {
                        "type": "input_image",
                        "image_url": "https://example.com/a.png",
                        "detail": "high",
                    },
                    {
                        "type": "input_file",
                        "filename": "r.pdf",
                        "file_data": f"data:application/pdf;base64,{PDF}",
                    },
                ],
            }
        ]
    },
    "developer-system-and-typed-messages": {
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "Be terse."}],
            },
            {"type": "message", "role": "system", "content": "Answer briefly."},
            {"type": "message", "role": "user", "content": "Hi", "status": "completed"},
        ]
    },
    "history-with-reasoning-refusal-and-parallel-calls": {
        "input": [
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "two calls"}],
                "encrypted_content": "opaque",
            },
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [
                    {"type": "refusal", "refusal": "Not that."},
                    {"type": "output_text", "text": "Checking.", "annotations": []},
                ],
            },
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {
                "type": "function_call",
                "id": "fc_2",
                "call_id": "call_2",
                "name": "get_weather",
                "arguments": '{"city": "Oslo"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "rain"},
            {
                "type": "function_call_output",
                "call_id": "call_2",
                "output": [{"type": "input_text", "text": "snow"}],
            },
        ],
        "tools": [WEATHER_FN],
        "include": ["reasoning.encrypted_content"],
    },
    "forced-function-and-parallel-off": {
        "input": "Paris",
        "tools": [WEATHER_FN, {**WEATHER_FN, "name": "get_time", "strict": True}],
        "tool_choice": {"type": "function", "name": "get_time"},
        "parallel_tool_calls": False,
    },
    "allowed-tools-required": {
        "input": "Paris",
        "tools": [WEATHER_FN],
        "tool_choice": {
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "get_weather"}],
        },
    },
    "json-object-format-and-verbosity": {
        "input": "Give JSON",
        "text": {"format": {"type": "json_object"}, "verbosity": "low"},
    },
    "explicit-zeros-and-falses": {
        "input": "Hi",
        "temperature": 0,
        "top_p": 0,
        "store": False,
        "parallel_tool_calls": False,
        "max_output_tokens": 1,
        "top_logprobs": 0,
        "metadata": {},
        "truncation": "auto",
        "user": "",
    },
    "reasoning-and-openai-only-hints": {
        "input": "Think",
        "reasoning": {"effort": "high", "summary": "detailed"},
        "max_output_tokens": 5000,
        "service_tier": "auto",
        "safety_identifier": "user-1",
        "prompt_cache_key": "k",
        "x_future_field": {"nested": [1, None]},
    },
    "hosted-web-search": {
        "input": "News",
        "tools": [{"type": "web_search", "search_context_size": "low"}],
    },
    "json-schema-with-tools": {"input": "x", "tools": [WEATHER_FN], "text": {"format": SCHEMA}},
}
# What a channel cannot take (a 400 naming it); everything else is served everywhere.
REFUSED = {
    "hosted-web-search": {"openai"},
    "json-schema-with-tools": {"anthropic"},
}

COMPLETIONS_CORPUS = {
    "fill-in-the-middle": {
        "prompt": "def add(a, b):\n    ",
        "suffix": "\n    return c",
        "max_tokens": 16,
        "temperature": 0,
        "stop": ["\n\n", "def "],
    },
    "token-arrays-echo-and-logprobs": {
        "prompt": [[1, 2, 3], [4]],
        "echo": True,
        "logprobs": 0,
        "n": 2,
    },
    "strings-with-unicode-and-an-empty-one": {
        "prompt": ["héllo 🙂", ""],
        "logit_bias": {"50256": -100},
        "seed": 7,
        "user": "u",
    },
    "best-of-and-penalties": {
        "prompt": "x",
        "best_of": 3,
        "n": 2,
        "presence_penalty": -2,
        "frequency_penalty": 2,
    },
}

PATHS = [
    *(("/v1/responses", kind) for kind in ("native", "openai", "anthropic", "mock")),
    *(("/v1/completions", kind) for kind in ("native", "mock")),
]


@pytest.fixture
def serve_with(relay_env, upstream, native_upstream, anthropic_upstream):
    ModelPriceFactory(group=relay_env.group, model="gpt-3.5-turbo-instruct", mode="completion")

    def use(kind: str) -> None:
        Channel.objects.filter(pk=relay_env.channel.pk).update(status=Channel.Status.DISABLED)
        channel_type = {"native": "openai"}.get(kind, kind)
        base_url = {
            "mock": "",
            "native": native_upstream.base_url,
            "openai": upstream.base_url,
            "anthropic": anthropic_upstream.root_url,
        }[kind]
        ChannelFactory(
            type=channel_type,
            base_url=base_url,
            served_models=["gpt-4o-mini", "gpt-3.5-turbo-instruct"],
            responses_api=kind == "native",
        )
        channel_cache_invalidate()

    return use


def _cases():
    for endpoint, kind in PATHS:
        corpus = RESPONSES_CORPUS if endpoint == "/v1/responses" else COMPLETIONS_CORPUS
        for name in corpus:
            for stream in (False, True):
                how = "stream" if stream else "plain"
                yield pytest.param(
                    endpoint, kind, name, stream, id=f"{endpoint[4:]}-{kind}-{name}-{how}"
                )


def _expected(endpoint: str, kind: str, name: str, stream: bool) -> int:
    if endpoint == "/v1/completions":
        # ``best_of`` candidates cannot be streamed.
        return 400 if stream and name == "best-of-and-penalties" else 200
    return 400 if kind in REFUSED.get(name, ()) else 200


@pytest.mark.parametrize(("endpoint", "kind", "name", "stream"), list(_cases()))
def test_unusual_bodies_are_served_or_refused_cleanly(
    relay_env, serve_with, endpoint, kind, name, stream
):
    serve_with(kind)
    corpus = RESPONSES_CORPUS if endpoint == "/v1/responses" else COMPLETIONS_CORPUS
    model = "gpt-4o-mini" if endpoint == "/v1/responses" else "gpt-3.5-turbo-instruct"
    body = {"model": model, **corpus[name], "stream": stream}
    request_id = f"odd-{endpoint[4:]}-{name}-{kind}-{stream}"
    headers = {"authorization": f"Bearer {relay_env.key.secret}", "x-request-id": request_id}
    with relay_env.http.stream("POST", endpoint, json=body, headers=headers) as response:
        raw = response.read()
    assert response.status_code == _expected(endpoint, kind, name, stream), raw[:500]
    if response.status_code != 200:
        error = orjson.loads(raw)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["param"], error
    elif stream and endpoint == "/v1/responses":
        events = [orjson.loads(e.split(b"data: ", 1)[1]) for e in raw.split(b"\n\n") if e.strip()]
        assert events[-1]["type"] in TERMINAL, raw[-500:]
        assert not any(e["type"] == "error" for e in events), raw[-500:]
    elif stream:
        assert raw.rstrip().endswith(b"data: [DONE]") and b'"error"' not in raw, raw[-500:]
    else:
        answer = orjson.loads(raw)
        assert answer["object"] == (
            "response" if endpoint == "/v1/responses" else "text_completion"
        )
    records = wait_for(
        lambda: list(UsageRecord.objects.filter(request_id=request_id, settled_at__isnull=False))
    )
    assert len(records) == 1
    assert records[0].status in ("success", "rejected"), records[0].status
    assert records[0].http_status == response.status_code
    assert not Hold.objects.filter(status=Hold.Status.OPEN).exists()
    assert ledger_check() == []
