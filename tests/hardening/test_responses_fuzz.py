"""Hostile and broken input to ``/v1/responses`` and ``/v1/completions``, sent over
HTTP to the live server, as ``test_relay_fuzz`` does for the other endpoints.

Whatever arrives, the answer is a 4xx in OpenAI's error shape, nothing reaches the
upstream and no money moves: no hold, no ledger entry, balance and held untouched.
"""

import orjson
import pytest
from django.conf import settings as django_settings
from hypothesis import given
from hypothesis import strategies as st

from tests.hardening.test_relay_fuzz import (
    dumps,
    floats_outside,
    fuzz,
    ints_outside,
    json_values,
    money,
    not_,
    openai_error,
    small_fuzz,
)
from tests.support.responses import post

COMPLETIONS = "/v1/completions"
ROLES = ("user", "assistant", "system", "developer")


@pytest.fixture
def env(relay_env, upstream):
    """The relay, and a check after the test that nothing reached the upstream and
    no money moved."""
    before = money(relay_env)
    yield relay_env
    assert upstream.calls == 0
    assert money(relay_env) == before


def bad_input() -> st.SearchStrategy:
    message = st.fixed_dictionaries({"role": st.just("user"), "content": st.just("hi")})
    return st.one_of(
        not_(str, list),
        st.just([]),
        st.lists(not_(dict), min_size=1, max_size=3),
        st.lists(message, max_size=2).flatmap(
            lambda good: st.one_of(
                json_values.filter(lambda r: r not in ROLES).map(
                    lambda role: [*good, {"role": role, "content": "hi"}]
                ),
                not_(str, list).map(lambda c: [*good, {"role": "user", "content": c}]),
                st.lists(not_(dict), min_size=1, max_size=2).map(
                    lambda parts: [*good, {"role": "user", "content": parts}]
                ),
                not_(str).map(lambda kind: [*good, {"type": kind, "call_id": "c"}]),
            )
        ),
    )


# field -> invalid values for it (each case also valid everywhere else)
RESPONSES_FIELDS: dict[str, st.SearchStrategy] = {
    "model": not_(str) | st.sampled_from(["", "   "]),
    "input": bad_input(),
    "instructions": not_(str),
    "max_output_tokens": not_(int) | ints_outside(1, 2**31 - 1),
    "max_tool_calls": not_(int) | ints_outside(1),
    "temperature": not_(int, float) | floats_outside(0, 2),
    "top_p": not_(int, float) | floats_outside(0, 1),
    "top_logprobs": not_(int, float) | ints_outside(0, 20),
    "stream": not_(bool),
    "store": not_(bool),
    "parallel_tool_calls": not_(bool),
    "background": st.just(True) | not_(bool),
    "tools": not_(list) | st.lists(not_(dict), min_size=1, max_size=3),
    "tool_choice": not_(str, dict),
    "text": not_(dict),
    "reasoning": not_(dict),
    "metadata": not_(dict),
    "include": not_(list) | st.lists(not_(str), min_size=1, max_size=2),
    "previous_response_id": not_(str) | st.sampled_from(["", "  "]),
    "conversation": json_values.filter(lambda v: v is not None),
    "prompt": json_values.filter(lambda v: v is not None),
    "user": not_(str),
}


@st.composite
def response_with_one_bad_field(draw) -> tuple[dict, str]:
    field = draw(st.sampled_from(sorted(RESPONSES_FIELDS)))
    body = {"model": "gpt-4o-mini", "input": "Hello"}
    body[field] = draw(RESPONSES_FIELDS[field])
    return body, field


@given(case=response_with_one_bad_field())
@fuzz
def test_a_wrong_value_in_any_field_of_a_response_is_a_400_naming_it(env, case):
    body, field = case
    error = openai_error(post(env, body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].startswith(field), (field, error)


@given(
    text_format=not_(dict)
    | st.fixed_dictionaries({"type": not_(str)})
    | st.fixed_dictionaries({"type": st.just("json_schema"), "schema": not_(dict)})
)
@small_fuzz
def test_a_malformed_text_format_is_a_400(env, text_format):
    body = {"model": "gpt-4o-mini", "input": "Hi", "text": {"format": text_format}}
    assert openai_error(post(env, body), 400)["param"].startswith("text.format")


@given(previous=st.text(min_size=1, max_size=60).filter(str.strip))
@small_fuzz
def test_any_unknown_previous_response_id_is_a_404_before_any_money_is_held(env, previous):
    body = {"model": "gpt-4o-mini", "input": "Hi", "previous_response_id": previous}
    error = openai_error(post(env, body), 404)
    assert (error["param"], error["code"]) == (
        "previous_response_id",
        "previous_response_not_found",
    )


@given(raw=st.binary(max_size=200) | json_values.map(dumps))
@fuzz
def test_any_bytes_sent_for_a_response_get_a_4xx(env, raw):
    openai_error(post(env, None, raw=raw))


@given(
    body=st.dictionaries(st.text(max_size=10), json_values, max_size=6).filter(
        lambda b: not isinstance(b.get("model"), str) or "input" not in b
    )
)
@fuzz
def test_random_objects_sent_for_a_response_get_a_4xx(env, body):
    openai_error(post(env, None, raw=dumps(body)))


COMPLETIONS_FIELDS: dict[str, st.SearchStrategy] = {
    "model": not_(str) | st.sampled_from(["", " "]),
    "prompt": not_(str, list)
    | st.just([])
    | st.lists(not_(str, int, list), min_size=1, max_size=3)
    | st.lists(st.just([]), min_size=1, max_size=2),
    "suffix": not_(str),
    "max_tokens": not_(int) | ints_outside(1),
    "temperature": not_(int, float) | floats_outside(0, 2),
    "top_p": not_(int, float) | floats_outside(0, 1),
    "n": not_(int) | ints_outside(1, 128),
    "best_of": not_(int) | ints_outside(1, 20),
    "logprobs": not_(int) | ints_outside(0, 5),
    "echo": not_(bool),
    "stream": not_(bool),
    "stop": not_(str, list) | st.lists(not_(str), min_size=1, max_size=2),
    "logit_bias": not_(dict),
    "user": not_(str),
}


@st.composite
def completion_with_one_bad_field(draw) -> tuple[dict, str]:
    field = draw(st.sampled_from(sorted(COMPLETIONS_FIELDS)))
    body = {"model": "gpt-4o-mini", "prompt": "Once"}
    body[field] = draw(COMPLETIONS_FIELDS[field])
    return body, field


@given(case=completion_with_one_bad_field())
@fuzz
def test_a_wrong_value_in_any_field_of_a_completion_is_a_400_naming_it(env, case):
    body, field = case
    error = openai_error(post(env, body, path=COMPLETIONS), 400)
    assert error["param"] == field, (field, error)


@given(raw=st.binary(max_size=200) | json_values.map(dumps))
@small_fuzz
def test_any_bytes_sent_for_a_completion_get_a_4xx(env, raw):
    openai_error(post(env, None, raw=raw, path=COMPLETIONS))


@pytest.mark.parametrize("path", ["/v1/responses", COMPLETIONS])
def test_both_endpoints_survive_deep_nesting_and_huge_bodies(env, path):
    field = "input" if path.endswith("responses") else "prompt"
    deep = b'{"model": "gpt-4o-mini", "' + field.encode() + b'": '
    deep += b"[" * 10_000 + b"]" * 10_000 + b"}"
    openai_error(post(env, None, raw=deep, path=path), 400)
    tools = orjson.dumps({"model": "gpt-4o-mini", field: "x"})[:-1]
    tools += b', "metadata": ' + b"[" * 300 + b"]" * 300 + b"}"
    openai_error(post(env, None, raw=tools, path=path), 400)
    big = {"model": "gpt-4o-mini", field: "x" * (django_settings.TOLLGATE["MAX_BODY_BYTES"] + 1)}
    assert openai_error(post(env, big, path=path), 413)["code"] == "request_too_large"
