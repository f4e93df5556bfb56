"""``POST /v1/completions``: OpenAI's legacy completions, passed through and billed
like chat completions, streamed and not."""

import openai
import orjson
import pytest

from billing.pricing import Price, token_components
from core.money import Units, pico_to_usd
from relay.dialects.completions import COMPLETIONS
from relay.models import Channel
from relay.selectors import channel_cache_invalidate
from relay.tokens import count_text
from tests.support.factories import ChannelFactory, ModelPriceFactory
from tests.support.relay import error_of
from tests.support.responses import client_for, post, settled

INSTRUCT = Price.of(
    model="gpt-3.5-turbo-instruct",
    components=token_components(input="1.50", output="2.00", cache_read="0.75"),
)
MODEL = "gpt-3.5-turbo-instruct"


@pytest.fixture
def instruct(relay_env, native_channel):
    """A completions model, priced, on an OpenAI-compatible channel."""
    ModelPriceFactory(
        group=relay_env.group,
        model=MODEL,
        mode="completion",
        input_per_m="1.50",
        output_per_m="2.00",
        cache_read_per_m="0.75",
    )
    return native_channel


def billed(record) -> Units:
    return Units(
        input=record.input_tokens, cache_read=record.cache_read_tokens, output=record.output_tokens
    )


@pytest.mark.parametrize(
    "prompt",
    ["def add(a, b):", ["first prompt", "second prompt"], [101, 202, 303], [[1, 2], [3, 4, 5]]],
    ids=["string", "strings", "tokens", "token-arrays"],
)
def test_a_completion_is_passed_through_and_billed_like_chat(
    relay_env, instruct, native_upstream, prompt
):
    completion = client_for(relay_env).completions.create(
        model=MODEL,
        prompt=prompt,
        suffix="    return result",
        max_tokens=40,
        echo=False,
        logprobs=2,
        n=2,
        best_of=3,
        temperature=0,
        extra_body={"mock": {"cached_tokens": 2}},
    )
    sent = native_upstream.requests[-1]
    assert sent["path"] == "/v1/completions"
    for name, value in {
        "prompt": prompt,
        "suffix": "    return result",
        "echo": False,
        "logprobs": 2,
        "n": 2,
        "best_of": 3,
        "temperature": 0,
    }.items():
        assert sent["json"][name] == value
    assert completion.object == "text_completion" and len(completion.choices) == 2
    assert completion.choices[0].logprobs.tokens
    usage = completion.usage
    record = settled(completion._request_id)
    assert record.endpoint == "completions" and not record.estimated
    assert billed(record) == Units(
        input=usage.prompt_tokens - 2, cache_read=2, output=usage.completion_tokens
    )
    assert record.input_tokens + record.cache_read_tokens == COMPLETIONS.prompt_tokens(sent["json"])
    assert record.cost_pico == INSTRUCT.cost(billed(record))
    assert usage.model_extra["cost"] == pico_to_usd(record.cost_pico)


@pytest.mark.parametrize("usage_asked", [False, True])
def test_a_stream_passes_on_its_usage_only_if_asked(
    relay_env, instruct, native_upstream, usage_asked
):
    options = {"stream_options": {"include_usage": True}} if usage_asked else {}
    with relay_env.http.stream(
        "POST",
        "/v1/completions",
        json={"model": MODEL, "prompt": "Once", "stream": True, **options},
        headers={"authorization": f"Bearer {relay_env.key.secret}"},
    ) as response:
        raw = response.read()
    events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == " Hello from the Tollgate mock upstream. You wrote: Once"
    # The upstream is always asked for its usage; the client gets it only if it asked.
    assert native_upstream.requests[-1]["json"]["stream_options"] == {"include_usage": True}
    record = settled(response.headers["x-request-id"])
    assert not record.estimated and record.output_tokens == count_text(text)
    if usage_asked:
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["cost"] == pico_to_usd(record.cost_pico)
    else:
        assert all("usage" not in c for c in chunks)


def test_the_official_clients_stream(relay_env, instruct):
    chunks = list(
        client_for(relay_env).completions.create(
            model=MODEL, prompt="Once", stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices).endswith("You wrote: Once")
    assert chunks[-1].usage.model_extra["cost"] is not None


def test_every_candidate_of_best_of_is_held_for(relay_env, instruct, native_upstream):
    """``best_of`` candidates are generated (and charged by the upstream) even though
    ``n`` come back: the hold covers all of them."""
    body = {"model": MODEL, "prompt": "x", "max_tokens": 500_000, "n": 1}
    # $2 per 1M output tokens x 20 x 500k tokens: more than the $5 the account has.
    response = post(relay_env, {**body, "best_of": 20}, path="/v1/completions")
    assert error_of(response, 403)["code"] == "insufficient_balance"
    assert native_upstream.calls == 0
    assert post(relay_env, {**body, "best_of": 1}, path="/v1/completions").status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL}, "prompt"),
        ({"model": MODEL, "prompt": []}, "prompt"),
        ({"model": MODEL, "prompt": [1, "a"]}, "prompt"),
        ({"model": MODEL, "prompt": "x", "suffix": 3}, "suffix"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "n": 3, "best_of": 2}, "best_of"),
        ({"model": MODEL, "prompt": "x", "best_of": 2, "stream": True}, "best_of"),
        ({"model": MODEL, "prompt": "x", "logprobs": 6}, "logprobs"),
        ({"model": MODEL, "prompt": "x", "echo": "yes"}, "echo"),
        (
            {"model": MODEL, "prompt": "x", "stream_options": {"include_usage": True}},
            "stream_options",
        ),
        ({"model": MODEL, "prompt": "x", "temperature": 3}, "temperature"),
    ],
)
def test_bad_input_is_a_400_naming_it_and_reaches_no_upstream(
    relay_env, instruct, native_upstream, body, param
):
    error = error_of(post(relay_env, body, path="/v1/completions"), 400)
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert native_upstream.calls == 0


def test_a_provider_that_cannot_serve_completions_is_not_routed_to(
    relay_env, claude_channel, anthropic_upstream
):
    ModelPriceFactory(group=relay_env.group, model="claude-instant", mode="completion")
    Channel.objects.filter(pk=claude_channel.pk).update(served_models=["claude-instant"])
    channel_cache_invalidate()
    response = post(relay_env, {"model": "claude-instant", "prompt": "x"}, path="/v1/completions")
    assert error_of(response, 503)["code"] == "no_channel_available"
    assert anthropic_upstream.calls == 0


def test_auto_chooses_among_the_completion_models(relay_env, instruct, native_upstream):
    completion = client_for(relay_env).completions.create(model="auto", prompt="Once")
    assert native_upstream.requests[-1]["json"]["model"] == MODEL
    assert settled(completion._request_id).model_served == MODEL


def test_the_built_in_mock_serves_completions(relay_env):
    ModelPriceFactory(group=relay_env.group, model=MODEL, mode="completion")
    Channel.objects.filter(pk=relay_env.channel.pk).update(status=Channel.Status.DISABLED)
    ChannelFactory(name="mock", type="mock", base_url="", served_models=[MODEL])
    channel_cache_invalidate()
    client = client_for(relay_env)
    completion = client.completions.create(model=MODEL, prompt="def f(", echo=True, n=2)
    assert [c.text for c in completion.choices] == [
        "def f( Hello from the Tollgate mock upstream. You wrote: def f("
    ] * 2
    streamed = client.completions.create(model=MODEL, prompt="def f(", stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices).endswith("You wrote: def f(")
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model=MODEL, prompt="x", extra_body={"mock": {"bogus": 1}})
    assert refused.value.body["param"] == "mock.bogus"
