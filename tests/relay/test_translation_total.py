"""The translations between chat completions and Anthropic Messages are total.

Requests are checked only as far as the gateway must understand them, and answers
come from upstreams, so any field a translation reads may hold any JSON value.
Whatever arrives, each translator (both directions, answers and stream events, and
the local token count that runs when a client leaves) either translates it or
refuses it as the caller's mistake (an ApiError, answered as a 400); it never
raises anything else, which would fail the request inside the gateway.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.money import Units
from relay.dialects import CHAT, MESSAGES
from relay.dialects.base import StreamEvent
from relay.errors import ApiError
from relay.providers.anthropic import chat as chat_over_anthropic
from relay.providers.anthropic.provider import fold_usage
from relay.providers.base import UpstreamStreamError
from relay.providers.openai import messages as messages_over_chat
from relay.providers.openai.provider import chunk_event
from relay.tokens import count_completion, count_messages

FIELDS = [
    "type", "text", "source", "content", "input", "id", "name", "tool_use_id", "function",
    "arguments", "tool_calls", "role", "image_url", "url", "data", "media_type", "index",
    "delta", "choices", "message", "usage", "finish_reason", "stop_reason", "content_block",
    "partial_json", "thinking", "file", "file_data", "refusal", "is_error", "title",
]  # fmt: skip
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=4))
json = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(FIELDS), inner, max_size=4)
    ),
    max_leaves=12,
)
block = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                "text",
                "image",
                "document",
                "tool_use",
                "tool_result",
                "thinking",
                "redacted_thinking",
                "search_result",
                "server_tool_use",
                "image_url",
                "input_audio",
                "file",
                "refusal",
                "something_new",
            ]
        )
    },
    optional={name: json for name in FIELDS if name != "type"},
)
content = st.one_of(st.text(max_size=4), st.lists(st.one_of(block, json), max_size=3))
messages_body = st.fixed_dictionaries(
    {
        "model": st.just("m"),
        "max_tokens": st.just(10),
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant"]), "content": content}
            ),
            min_size=1,
            max_size=3,
        ),
    },
    optional={
        "system": st.one_of(st.text(max_size=3), st.lists(json, max_size=2)),
        "tools": st.lists(json, max_size=2),
        "tool_choice": json,
        "stop_sequences": json,
        "metadata": json,
    },
)
chat_body = st.fixed_dictionaries(
    {
        "model": st.just("m"),
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(
                        ["user", "assistant", "system", "developer", "tool", "function"]
                    )
                },
                optional={
                    "content": st.one_of(st.none(), content),
                    "tool_calls": json,
                    "tool_call_id": json,
                    "name": json,
                    "function_call": json,
                    "refusal": json,
                },
            ),
            min_size=1,
            max_size=3,
        ),
    },
    optional={
        "tools": st.lists(json, max_size=2),
        "tool_choice": json,
        "stop": json,
        "user": json,
        "parallel_tool_calls": st.booleans(),
    },
)
answer = st.dictionaries(st.sampled_from(FIELDS), json, max_size=5)

total = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _translated_or_refused(*steps) -> None:
    for step in steps:
        try:
            step()
        except (ApiError, UpstreamStreamError):
            pass


@total
@given(messages_body)
def test_a_messages_request_translates_to_chat_or_is_refused(body):
    _translated_or_refused(
        lambda: count_messages(messages_over_chat.messages_to_chat(body)["messages"]),
        lambda: MESSAGES.accounting(body).tokens(),
    )


@total
@given(chat_body)
def test_a_chat_request_translates_to_messages_or_is_refused(body):
    _translated_or_refused(
        lambda: chat_over_anthropic.chat_to_anthropic(body, "m"),
        lambda: count_messages(body["messages"]),
    )


@total
@given(answer)
def test_any_answer_or_stream_event_translates_both_ways(data):
    chat_events = CHAT.accounting({})
    anthropic_events = MESSAGES.accounting({})
    _translated_or_refused(
        lambda: messages_over_chat.chat_to_message(data, "m", Units()),
        lambda: chat_over_anthropic.anthropic_to_chat(data),
        lambda: count_completion(data),
        lambda: MESSAGES.estimate({}, data),
        lambda: list(chat_over_anthropic.AnthropicToChat().feed(data)),
        lambda: messages_over_chat.ChatToMessages("m").feed(data),
        lambda: (
            chat_events.observe(chunk_event(data)),
            chat_events.delivered(data),
            chat_events.tokens(),
        ),
        lambda: (
            anthropic_events.observe(StreamEvent(data)),
            anthropic_events.delivered(data),
            anthropic_events.tokens(),
        ),
        lambda: fold_usage({}, data),
    )
