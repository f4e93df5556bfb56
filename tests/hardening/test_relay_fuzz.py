"""Hostile and broken input to the relay's endpoints, sent over HTTP to the live server.

Whatever arrives, the answer is a 4xx in the endpoint's error shape (never a 500),
nothing reaches the upstream and no money moves: no hold, no ledger entry, balance
and held untouched. ``tests/relay/test_errors.py`` pins the individual messages and
params; this file throws generated input at the same checks.
"""

import json
import re
import socket
from dataclasses import dataclass

import orjson
import pytest
from django.conf import settings as django_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.models import Entry, Hold, Transaction
from relay.dialects.media import sniffed
from tests.support.factories import ApiKeyFactory
from tests.support.media import png, wav
from tests.support.relay import chat

CHAT_URL = "/v1/chat/completions"
PRICED = {"gpt-4o-mini", "o4-mini", "auto"}

fuzz = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
small_fuzz = settings(fuzz, max_examples=30)


@dataclass(frozen=True)
class Money:
    balance: int
    held: int
    entries: int
    transactions: int
    holds: int


def money(env) -> Money:
    account = env.refresh()
    return Money(
        balance=account.balance,
        held=account.held,
        entries=Entry.objects.count(),
        transactions=Transaction.objects.count(),
        holds=Hold.objects.count(),
    )


@pytest.fixture
def env(relay_env, upstream):
    """The relay, and a check after the test that nothing reached the upstream and
    no money moved."""
    before = money(relay_env)
    yield relay_env
    assert upstream.calls == 0
    assert money(relay_env) == before


def openai_error(response, status: int | None = None) -> dict:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def anthropic_error(response) -> dict:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    return body["error"]


# -- generated JSON ----------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def dumps(value) -> bytes:
    # The standard library writes integers of any size; orjson stops at 64 bits.
    return json.dumps(value).encode()


def not_(*allowed: type) -> st.SearchStrategy:
    """Any non-null JSON value whose type is none of ``allowed`` (bool is never an int)."""

    def wrong(value) -> bool:
        if value is None:
            return False
        if isinstance(value, bool):
            return bool not in allowed
        return not isinstance(value, allowed)

    return json_values.filter(wrong)


def ints_outside(low: int, high: int | None = None) -> st.SearchStrategy:
    below = st.integers(max_value=low - 1)
    if high is None:
        return below
    return below | st.integers(min_value=high + 1, max_value=2**70)


def floats_outside(low: float, high: float) -> st.SearchStrategy:
    return st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not low <= v <= high)


def bad_messages() -> st.SearchStrategy:
    message = st.fixed_dictionaries({"role": st.just("user"), "content": st.just("hi")})
    return st.one_of(
        not_(list),
        st.just([]),
        st.lists(not_(dict), min_size=1, max_size=3),
        st.lists(message, max_size=2).flatmap(
            lambda good: st.one_of(
                # A role outside the chat roles, or not a string at all.
                json_values.filter(
                    lambda r: (
                        r not in ("system", "developer", "user", "assistant", "tool", "function")
                    )
                ).map(lambda role: [*good, {"role": role, "content": "hi"}]),
                # Content that is neither text, nor parts, nor absent.
                not_(str, list).map(lambda content: [*good, {"role": "user", "content": content}]),
            )
        ),
    )


# field -> invalid values for it (each case also valid everywhere else)
CHAT_FIELDS: dict[str, st.SearchStrategy] = {
    "model": not_(str) | st.sampled_from(["", "   "]),
    "messages": bad_messages(),
    "max_tokens": not_(int) | ints_outside(1),
    "max_completion_tokens": not_(int) | ints_outside(1),
    "temperature": not_(int, float) | floats_outside(0, 2) | ints_outside(0, 2),
    "top_p": not_(int, float) | floats_outside(0, 1) | ints_outside(0, 1),
    "presence_penalty": not_(int, float) | floats_outside(-2, 2),
    "frequency_penalty": not_(int, float) | floats_outside(-2, 2),
    "n": not_(int) | ints_outside(1, 128),
    "stream": not_(bool),
    "tools": not_(list) | st.lists(not_(dict), min_size=1, max_size=3),
    "tool_choice": not_(str, dict),
    "user": not_(str),
}


@st.composite
def chat_with_one_bad_field(draw) -> tuple[dict, str]:
    field = draw(st.sampled_from(sorted(CHAT_FIELDS)))
    body = chat()
    body[field] = draw(CHAT_FIELDS[field])
    return body, field


@st.composite
def bad_stream_options(draw) -> dict:
    """``stream_options`` without ``stream: true``, or not an object."""
    if draw(st.booleans()):
        return chat(stream=True, stream_options=draw(not_(dict)))
    stream = draw(st.sampled_from([False, None]))
    body = chat(stream_options=draw(json_values.filter(lambda v: v is not None)))
    if stream is not None:
        body["stream"] = stream
    return body


@given(case=chat_with_one_bad_field())
@fuzz
def test_a_wrong_value_in_any_field_is_a_400_naming_it(env, case):
    body, field = case
    error = openai_error(env.post(body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].startswith(field), (field, error)


@given(body=bad_stream_options())
@small_fuzz
def test_stream_options_without_a_stream_or_of_the_wrong_type_is_a_400(env, body):
    assert openai_error(env.post(body), 400)["param"] == "stream_options"


@given(model=st.text(min_size=1, max_size=60).filter(lambda m: m.strip() and m not in PRICED))
@small_fuzz
def test_any_unpriced_model_name_is_a_404(env, model):
    error = openai_error(env.post({**chat(), "model": model}), 404)
    assert error["code"] == "model_not_found"


@given(raw=st.binary(max_size=200))
@fuzz
def test_arbitrary_bytes_get_a_4xx(env, raw):
    openai_error(env.post(None, raw=raw))


@given(value=json_values.filter(lambda v: not isinstance(v, dict)))
@small_fuzz
def test_json_that_is_not_an_object_is_a_400(env, value):
    openai_error(env.post(None, raw=dumps(value)), 400)


@given(
    body=st.dictionaries(st.text(max_size=10), json_values, max_size=6).filter(
        # (a model given as a list or an object cannot be looked up in a set)
        lambda b: (
            not isinstance(b.get("model"), str) or b["model"] not in PRICED or "messages" not in b
        )
    )
)
@fuzz
def test_random_objects_get_a_4xx(env, body):
    openai_error(env.post(None, raw=dumps(body)))


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"model": "gpt-4o-mini", "messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        # Within what the parser accepts but deeper than the body could be forwarded
        # upstream: once a 500 after money was held for the request.
        orjson.dumps(chat())[:-1] + b', "metadata": ' + b"[" * 300 + b"]" * 300 + b"}",
        orjson.dumps(chat())[:-1] + b', "tools": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": '
        + b"[" * 1000
        + b"]" * 1000
        + b'}], "n": 0}',
    ],
    ids=["array", "object", "in-messages", "unknown-field-300", "tools-1000", "content-1000"],
)
def test_deep_nesting_is_a_400_not_a_crash(env, raw):
    openai_error(env.post(None, raw=raw), 400)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "gpt-4o-mini\xff", "messages": []}',
        b'{"model": "\xc3\x28"}',
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\\ud800"}]}',
        b"\xef\xbb\xbf" + orjson.dumps(chat(n=0)),
        orjson.dumps(chat()).replace(b"}", b"", 1),
        orjson.dumps(chat()) + b"garbage",
        orjson.dumps(chat()) + orjson.dumps(chat()),
        b'{"model": "gpt-4o-mini", "max_tokens": 1e400}',
        b'{"model": "gpt-4o-mini", "temperature": NaN}',
        b"\x00" * 64,
        b" ",
    ],
)
def test_invalid_utf8_and_broken_json_are_400(env, raw):
    openai_error(env.post(None, raw=raw), 400)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 2**63),
        ("max_tokens", 10**30),
        ("max_completion_tokens", 2**64),
        ("max_tokens", 2**40),
    ],
)
def test_a_token_limit_no_model_could_reach_is_a_400_not_a_crash(env, field, value):
    """The hold for such a request would not fit the ledger's 64-bit amounts."""
    error = openai_error(env.post(chat(**{field: value})), 400)
    assert error["param"] == field


def test_a_body_over_the_size_limit_is_413(env):
    limit = django_settings.TOLLGATE["MAX_BODY_BYTES"]
    filler = "x" * (limit + 1)
    error = openai_error(env.post(chat(filler)), 413)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "request_too_large"


def test_a_chunked_body_over_the_size_limit_is_413(env):
    """Without a content-length the size is only known once the body is read."""
    limit = django_settings.TOLLGATE["MAX_BODY_BYTES"]
    payload = orjson.dumps(chat("x" * (limit + 1)))

    def chunks():
        for start in range(0, len(payload), 1 << 20):
            yield payload[start : start + (1 << 20)]

    response = env.http.post(
        CHAT_URL,
        content=chunks(),
        headers={"authorization": f"Bearer {env.key.secret}", "content-type": "application/json"},
    )
    openai_error(response, 413)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "multipart/form-data",
        "application/json; charset=latin-1",
        "\u00e9/\u00e9",
    ],
)
def test_odd_content_types_with_a_broken_body_are_400(env, content_type):
    """The body is read as JSON whatever the declared type (as the OpenAI SDKs and curl
    users expect), so a form or multipart type never reaches Django's form parsers."""
    headers = {"content-type": content_type.encode("latin-1")} if content_type else {}
    body = b"--xyz\r\nContent-Disposition: form-data; name=model\r\n\r\ngpt\r\n--xyz--"
    openai_error(env.post(None, raw=body, headers=headers), 400)


@given(
    value=st.binary(max_size=60).filter(
        lambda b: all(c in (9, 32) or 0x21 <= c <= 0x7E or c >= 0x80 for c in b)
    ),
    scheme=st.sampled_from([b"Bearer ", b"bearer ", b"Bearer  ", b"Basic ", b"", b"Token "]),
)
@fuzz
def test_malformed_authorization_is_401(env, value, scheme):
    header = (scheme + value).strip()
    response = env.http.post(
        CHAT_URL, json=chat(), headers=[(b"authorization", header)] if header else []
    )
    error = openai_error(response, 401)
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")


@pytest.mark.parametrize("second", ["same", "other", "garbage"])
def test_a_doubled_authorization_header_is_401(env, second):
    key = env.key.secret
    other = {
        "same": key,
        "other": ApiKeyFactory(account=env.account).secret,
        "garbage": "sk-nope",
    }[second]
    response = env.http.post(
        CHAT_URL,
        json=chat(),
        headers=[("authorization", f"Bearer {key}"), ("authorization", f"Bearer {other}")],
    )
    openai_error(response, 401)


def _raw_http(env, request: bytes) -> bytes:
    host, port = env.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_doubled_content_length_is_refused(env):
    body = orjson.dumps(chat())
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {env.key.secret}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nContent-Length: {len(body) + 5}\r\n".encode()
        + b"Connection: close\r\n\r\n"
        + body
    )
    reply = _raw_http(env, request)
    head, _, payload = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert 400 <= status < 500, reply[:500]
    if b"x-request-id" not in head.lower():
        pytest.skip("the ASGI server refuses the request before Tollgate sees it")
    assert set(orjson.loads(payload)["error"]) == {"message", "type", "param", "code"}


# -- the other endpoints, with a smaller budget ------------------------------------------

MESSAGES_FIELDS: dict[str, st.SearchStrategy] = {
    "model": not_(str) | st.sampled_from(["", " "]),
    "max_tokens": not_(int) | ints_outside(1),
    "messages": not_(list)
    | st.just([])
    | st.lists(not_(dict), min_size=1, max_size=2)
    | not_(str, list).map(lambda c: [{"role": "user", "content": c}])
    | json_values.filter(lambda r: r not in ("user", "assistant")).map(
        lambda r: [{"role": r, "content": "hi"}]
    ),
    "system": not_(str, list),
    "temperature": not_(int, float) | floats_outside(0, 1),
    "top_p": not_(int, float) | floats_outside(0, 1),
    "top_k": not_(int) | ints_outside(0),
    "stream": not_(bool),
    "stop_sequences": not_(list) | st.lists(not_(str), min_size=1, max_size=2),
}


@st.composite
def messages_with_one_bad_field(draw) -> tuple[dict, str]:
    field = draw(st.sampled_from(sorted(MESSAGES_FIELDS)))
    body = {"model": "gpt-4o-mini", "max_tokens": 16, **chat()}
    body[field] = draw(MESSAGES_FIELDS[field])
    return body, field


def _post(env, path: str, *, body=None, raw: bytes | None = None):
    headers = {"x-api-key": env.key.secret, "content-type": "application/json"}
    return env.http.post(path, content=raw if raw is not None else dumps(body), headers=headers)


@given(case=messages_with_one_bad_field())
@small_fuzz
def test_messages_endpoint_refuses_a_wrong_value_in_any_field(env, case):
    body, field = case
    error = anthropic_error(_post(env, "/v1/messages", body=body))
    assert error["type"] == "invalid_request_error"
    assert field.split(".")[0] in error["message"] or field == "messages"


@given(raw=st.binary(max_size=120) | json_values.map(dumps))
@small_fuzz
def test_messages_endpoint_answers_any_bytes_with_a_4xx(env, raw):
    anthropic_error(_post(env, "/v1/messages", raw=raw))


def test_messages_endpoint_survives_deep_nesting_and_huge_bodies(env):
    anthropic_error(_post(env, "/v1/messages", raw=b"[" * 10_000 + b"]" * 10_000))
    big = b"x" * (django_settings.TOLLGATE["MAX_BODY_BYTES"] + 1)
    response = _post(env, "/v1/messages", raw=big)
    assert response.status_code == 413
    assert anthropic_error(response)["type"] == "request_too_large"


EMBEDDINGS_FIELDS: dict[str, st.SearchStrategy] = {
    "model": not_(str) | st.sampled_from(["", " "]),
    "input": not_(str, list)
    | st.just("")
    | st.just([])
    | st.lists(not_(str, int, list), min_size=1, max_size=3)
    | st.lists(st.just([]), min_size=1, max_size=2),
    "dimensions": not_(int) | ints_outside(1),
    "encoding_format": json_values.filter(lambda v: v is not None and v not in ("float", "base64")),
    "user": not_(str),
}


@st.composite
def embeddings_with_one_bad_field(draw) -> tuple[dict, str]:
    field = draw(st.sampled_from(sorted(EMBEDDINGS_FIELDS)))
    body = {"model": "gpt-4o-mini", "input": "hello"}
    body[field] = draw(EMBEDDINGS_FIELDS[field])
    return body, field


@given(case=embeddings_with_one_bad_field())
@small_fuzz
def test_embeddings_endpoint_refuses_a_wrong_value_in_any_field(env, case):
    body, field = case
    response = env.http.post(
        "/v1/embeddings", json=body, headers={"authorization": f"Bearer {env.key.secret}"}
    )
    error = openai_error(response, 400)
    assert error["param"] == field


@given(raw=st.binary(max_size=120) | json_values.map(dumps))
@small_fuzz
def test_embeddings_endpoint_answers_any_bytes_with_a_4xx(env, raw):
    response = env.http.post(
        "/v1/embeddings", content=raw, headers={"authorization": f"Bearer {env.key.secret}"}
    )
    openai_error(response)


def test_embeddings_endpoint_survives_deep_nesting_and_huge_bodies(env):
    headers = {"authorization": f"Bearer {env.key.secret}"}
    deep = b'{"model": "gpt-4o-mini", "input": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    openai_error(env.http.post("/v1/embeddings", content=deep, headers=headers), 400)
    big = b"x" * (django_settings.TOLLGATE["MAX_BODY_BYTES"] + 1)
    openai_error(env.http.post("/v1/embeddings", content=big, headers=headers), 413)


# -- the media endpoints -----------------------------------------------------------------


@pytest.fixture
def media(media_env, upstream):
    """The relay with its media models, and the same check after the test: nothing
    reached an upstream and no money moved."""
    before = money(media_env)
    yield media_env
    assert media_env.upstream.calls == 0 and upstream.calls == 0
    assert money(media_env) == before


def _not(pattern: str) -> st.SearchStrategy:
    """Any non-null JSON value but a string matching ``pattern``."""
    return json_values.filter(
        lambda v: v is not None and not (isinstance(v, str) and re.fullmatch(pattern, v))
    )


MEDIA_JSON: dict[str, tuple[dict, dict[str, st.SearchStrategy]]] = {
    "/v1/images/generations": (
        {"model": "dall-e-3", "prompt": "a cat"},
        {
            "model": not_(str) | st.sampled_from(["", " "]),
            "prompt": not_(str) | st.sampled_from(["", "  "]),
            "n": not_(int) | ints_outside(1, 10),
            "size": _not(r"auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4}"),
            "quality": _not(r"[a-z]{1,16}"),
            "response_format": _not("url|b64_json"),
            "stream": json_values.filter(lambda v: v is not None and v is not False),
            "user": not_(str),
        },
    ),
    "/v1/audio/speech": (
        {"model": "tts-1", "voice": "alloy", "input": "hi"},
        {
            "model": not_(str) | st.sampled_from(["", " "]),
            "input": not_(str) | st.just(""),
            "voice": not_(str, dict) | st.sampled_from(["", " ", {}, {"id": 3}]),
            "response_format": _not("mp3|opus|aac|flac|wav|pcm"),
            "stream_format": _not("audio|sse"),
            "speed": not_(int, float) | floats_outside(0.25, 4),
            "instructions": not_(str),
        },
    ),
    "/v1/rerank": (
        {"model": "rerank-v3.5", "query": "q", "documents": ["a"]},
        {
            "model": not_(str) | st.sampled_from(["", " "]),
            "query": not_(str) | st.sampled_from(["", "  "]),
            "documents": not_(list)
            | st.just([])
            | st.lists(not_(str, dict), min_size=1, max_size=3)
            | st.lists(st.dictionaries(st.sampled_from(["title", "id"]), json_values), min_size=1),
            "top_n": not_(int) | ints_outside(1),
            "max_tokens_per_doc": not_(int) | ints_outside(1),
            "return_documents": not_(bool),
        },
    ),
    "/v1/moderations": (
        {"input": "hi"},
        {
            "model": not_(str) | st.sampled_from(["", " "]),
            "input": not_(str, list)
            | st.just([])
            | st.lists(not_(str, dict), min_size=1, max_size=3)
            | st.lists(st.fixed_dictionaries({"type": _not("text|image_url")}), min_size=1),
        },
    ),
}


@st.composite
def media_json_with_one_bad_field(draw) -> tuple[str, dict, str]:
    path = draw(st.sampled_from(sorted(MEDIA_JSON)))
    good, fields = MEDIA_JSON[path]
    field = draw(st.sampled_from(sorted(fields)))
    return path, {**good, field: draw(fields[field])}, field


def _bearer(env) -> dict[str, str]:
    return {"authorization": f"Bearer {env.key.secret}"}


@given(case=media_json_with_one_bad_field())
@fuzz
def test_media_endpoints_refuse_a_wrong_value_in_any_field(media, case):
    path, body, field = case
    error = openai_error(media.http.post(path, content=dumps(body), headers=_bearer(media)), 400)
    assert error["param"] is not None and error["param"].startswith(field), (path, field, error)


@given(
    path=st.sampled_from(sorted(MEDIA_JSON)),
    raw=st.binary(max_size=120) | json_values.map(dumps),
)
@small_fuzz
def test_media_json_endpoints_answer_any_bytes_with_a_4xx(media, path, raw):
    openai_error(media.http.post(path, content=raw, headers=_bearer(media)))


@pytest.mark.parametrize("path", sorted(MEDIA_JSON))
def test_media_json_endpoints_survive_deep_nesting(media, path):
    good, _ = MEDIA_JSON[path]
    deep = orjson.dumps(good)[:-1] + b', "extra": ' + b"[" * 300 + b"]" * 300 + b"}"
    openai_error(media.http.post(path, content=deep, headers=_bearer(media)), 400)
    openai_error(media.http.post(path, content=b"[" * 10_000, headers=_bearer(media)), 400)


FORMS = {
    "/v1/audio/transcriptions": ("file", ("clip.wav", wav(1), "audio/wav"), {"model": "whisper-1"}),
    "/v1/audio/translations": ("file", ("clip.wav", wav(1), "audio/wav"), {"model": "whisper-1"}),
    "/v1/images/edits": (
        "image",
        ("a.png", png(), "image/png"),
        {"model": "dall-e-3", "prompt": "a hat"},
    ),
}


def _unit_number(text: str) -> bool:
    try:
        return 0 <= float(text) <= 1 and len(text) < 32
    except ValueError:
        return False


FORM_FIELDS: dict[str, dict[str, st.SearchStrategy]] = {
    "/v1/audio/transcriptions": {
        "model": st.sampled_from(["", "   "]),
        "response_format": st.text(max_size=12).filter(
            lambda v: v not in ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
        ),
        "temperature": st.text(max_size=8).filter(lambda v: not _unit_number(v)),
        "stream": st.text(max_size=6).filter(lambda v: v not in ("true", "false")),
    },
    "/v1/audio/translations": {
        "model": st.sampled_from(["", "   "]),
        "response_format": st.text(max_size=12).filter(
            lambda v: v not in ("json", "text", "srt", "verbose_json", "vtt")
        ),
        "stream": st.text(max_size=6).filter(lambda v: v != "false"),
    },
    "/v1/images/edits": {
        "model": st.sampled_from(["", "   "]),
        "prompt": st.sampled_from(["", "   "]),
        "n": st.text(max_size=4).filter(lambda v: not (v.isdigit() and 1 <= int(v) <= 10)),
        "size": st.text(max_size=12).filter(
            lambda v: not re.fullmatch(r"auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4}", v)
        ),
        "response_format": st.text(max_size=10).filter(lambda v: v not in ("url", "b64_json")),
        "stream": st.text(max_size=6).filter(lambda v: v != "false"),
    },
}


@st.composite
def form_with_one_bad_field(draw) -> tuple[str, dict, str]:
    path = draw(st.sampled_from(sorted(FORMS)))
    field = draw(st.sampled_from(sorted(FORM_FIELDS[path])))
    return path, {**FORMS[path][2], field: draw(FORM_FIELDS[path][field])}, field


@given(case=form_with_one_bad_field())
@fuzz
def test_upload_endpoints_refuse_a_wrong_value_in_any_field(media, case):
    path, data, field = case
    name, upload, _ = FORMS[path]
    response = media.http.post(path, data=data, files={name: upload}, headers=_bearer(media))
    assert openai_error(response, 400)["param"] == field


@given(
    path=st.sampled_from(sorted(FORMS)),
    content=st.binary(max_size=300).filter(lambda b: sniffed(memoryview(b)) is None),
    filename=st.sampled_from(["a.wav", "a.mp3", "a.png", "a", "a.webm", "a.txt"]),
    content_type=st.sampled_from(["audio/wav", "image/png", "application/octet-stream", ""]),
)
@fuzz
def test_an_upload_of_any_other_bytes_is_a_400_naming_its_field(
    media, path, content, filename, content_type
):
    name, _, data = FORMS[path]
    upload = (filename, content, content_type) if content_type else (filename, content)
    response = media.http.post(path, data=data, files={name: upload}, headers=_bearer(media))
    assert openai_error(response, 400)["param"] == name


@pytest.mark.parametrize(
    "content",
    [
        b"RIFF\x00\x00\x00\x00WAVE",
        b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00" + bytes(16),
        b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(100),
        b"\xff\xfb" + bytes(10),
        b"fLaC" + bytes(40),
        b"OggS" + bytes(60),
        b"\x00\x00\x00\x18ftypmp42" + bytes(40),
    ],
    ids=["wav-empty", "wav-no-data", "id3-only", "mp3-cut", "flac", "ogg", "mp4"],
)
def test_audio_with_a_right_header_and_a_broken_body_is_a_400(media, content):
    response = media.http.post(
        "/v1/audio/transcriptions",
        data={"model": "whisper-1"},
        files={"file": ("clip", content)},
        headers=_bearer(media),
    )
    assert openai_error(response, 400)["param"] == "file"


@given(path=st.sampled_from(sorted(FORMS)), raw=st.binary(max_size=200))
@small_fuzz
def test_upload_endpoints_answer_any_bytes_with_a_4xx(media, path, raw):
    headers = {**_bearer(media), "content-type": "multipart/form-data; boundary=xyz"}
    openai_error(media.http.post(path, content=raw, headers=headers))
