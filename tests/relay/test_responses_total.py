"""The Responses API's translations are total, as ``test_translation_total`` checks for
chat completions and Messages: whatever a body that passed validation holds, and
whatever an upstream sends back, each translator (to chat completions, to Messages,
answers and stream chunks back, the local counts and the stream's accounting)
either translates it or refuses it as the caller's mistake (an ApiError, a 400); it
never raises anything else, which would fail the request inside the gateway."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.dialects import COMPLETIONS, RESPONSES
from relay.dialects.base import StreamEvent
from relay.errors import ApiError
from relay.providers.anthropic.responses import responses_to_anthropic
from relay.providers.openai.responses import ChatToResponses, answer_from_chat, responses_to_chat

FIELDS = [
    "type", "role", "content", "text", "refusal", "image_url", "file_data", "file_id",
    "detail", "input_audio", "call_id", "id", "name", "arguments", "output", "summary",
    "format", "schema", "effort", "tools", "mode", "choices", "delta", "message",
    "tool_calls", "function", "index", "finish_reason", "reasoning_content", "item",
    "response", "usage", "action", "tool_usage", "web_search", "num_requests",
]  # fmt: skip
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=4))
json = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(FIELDS), inner, max_size=4)
    ),
    max_leaves=12,
)
part = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                "input_text",
                "output_text",
                "input_image",
                "input_file",
                "input_audio",
                "refusal",
                "x",
            ]
        )
    },
    optional={name: json for name in FIELDS if name != "type"},
)
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "developer"]),
        "content": st.one_of(st.text(max_size=4), st.lists(part, max_size=3)),
    },
    optional={"type": st.just("message"), "id": json},
)
item = st.one_of(
    message,
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                [
                    "function_call",
                    "function_call_output",
                    "reasoning",
                    "web_search_call",
                    "item_reference",
                    "custom_tool_call",
                    "something_new",
                ]
            )
        },
        optional={name: json for name in FIELDS if name != "type"},
    ),
)
tool = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "web_search", "custom"])},
        optional={name: json for name in ("name", "parameters", "strict", "description")},
    ),
)
responses_body = st.fixed_dictionaries(
    {
        "model": st.just("m"),
        "input": st.one_of(st.text(max_size=4), st.lists(item, min_size=1, max_size=4)),
    },
    optional={
        "instructions": st.text(max_size=4),
        "tools": st.lists(tool, max_size=2),
        "tool_choice": st.one_of(st.sampled_from(["auto", "none", "required"]), json),
        "text": st.fixed_dictionaries({}, optional={"format": json}),
        "reasoning": st.dictionaries(st.sampled_from(["effort", "summary"]), json, max_size=2),
        "max_output_tokens": st.integers(1, 100_000),
        "parallel_tool_calls": st.booleans(),
        "temperature": st.floats(0, 2),
        "top_logprobs": st.integers(0, 20),
    },
)
fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@given(body=responses_body)
@fuzz
def test_any_valid_responses_request_translates_or_is_a_400(body):
    try:
        RESPONSES.validate(body)
    except ApiError:
        return
    assert RESPONSES.prompt_tokens(body) >= 0
    for translate in (responses_to_chat, responses_to_anthropic):
        try:
            translate(body)
        except ApiError as refused:
            assert refused.status == 400 and refused.param


@given(completion=json, body=responses_body)
@fuzz
def test_any_chat_answer_becomes_a_response(completion, body):
    if isinstance(completion, dict):
        response = answer_from_chat(completion, body, "m")
        assert response["object"] == "response"
        RESPONSES.estimate(body, response)


@given(chunks=st.lists(json, max_size=6), body=responses_body)
@fuzz
def test_any_chat_chunks_become_events_in_order(chunks, body):
    translator = ChatToResponses(body, "m")
    events = translator.start()
    for chunk in chunks:
        if isinstance(chunk, dict):
            events += translator.feed(chunk)
    events += translator.finish_events()
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    accounting = RESPONSES.accounting(body)
    for event in events:
        accounting.observe(StreamEvent(data=event))
        accounting.delivered(event)
    tokens, estimated = accounting.tokens()
    assert estimated and tokens.total >= 0


@given(events=st.lists(json, max_size=6), body=responses_body)
@fuzz
def test_any_upstream_events_are_accounted(events, body):
    accounting = RESPONSES.accounting(body)
    fmt = RESPONSES.stream_format(RESPONSES.validate({"model": "m", "input": "x"}))
    for event in events:
        if isinstance(event, dict):
            accounting.observe(StreamEvent(data=event))
            fmt.event(StreamEvent(data=event))
            accounting.delivered(event)
    tokens, _ = accounting.tokens()
    fmt.end(tokens, 0)


@given(
    prompt=st.one_of(
        st.text(max_size=6), st.lists(st.one_of(st.text(max_size=3), json), max_size=3)
    ),
    answer=json,
)
@fuzz
def test_any_completions_request_is_counted(prompt, answer):
    body = {"model": "m", "prompt": prompt, "suffix": "x"}
    assert COMPLETIONS.prompt_tokens(body) >= 0
    if isinstance(answer, dict):
        COMPLETIONS.estimate(body, answer)
    accounting = COMPLETIONS.accounting(body)
    if isinstance(answer, dict):
        accounting.delivered(answer)
    accounting.tokens()
