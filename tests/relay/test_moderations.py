"""Moderations: priced as configured (free with a zero-rate request price), yet
authenticated, rate-limited and recorded like any other request."""

import pytest

from tests.support.factories import ApiKeyFactory, ModelPriceFactory
from tests.support.media import money, settled
from tests.support.relay import error_of


def test_a_free_moderation_is_recorded_at_no_cost(media_env):
    before = money(media_env)

    answer = media_env.client.moderations.create(
        input="I will bake a cake", extra_headers={"x-request-id": "mod-free"}
    )

    assert answer.results[0].flagged is False
    assert answer.model_extra["usage"]["cost"] == "0.000000"
    # The default model, as OpenAI's.
    assert media_env.upstream.requests[0]["json"] == {
        "model": "omni-moderation-latest",
        "input": "I will bake a cake",
    }
    record = settled("mod-free")
    assert (record.status, record.endpoint, record.model_served) == (
        "success",
        "moderations",
        "omni-moderation-latest",
    )
    assert record.cost_pico == 0
    assert record.price_snapshot["components"] == [
        {"unit": "request", "rate": "0.00", "per": "request", "quantity": 1, "cost": "0.000000"}
    ]
    after = money(media_env)
    assert (after.balance, after.held) == (before.balance, 0)


def test_text_and_image_parts_go_upstream_as_they_came(media_env):
    parts = [
        {"type": "text", "text": "Is this fine?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]

    media_env.client.moderations.create(model="omni-moderation-latest", input=parts)
    media_env.client.moderations.create(model="omni-moderation-latest", input=["one", "two"])

    assert media_env.upstream.requests[0]["json"]["input"] == parts
    assert media_env.upstream.requests[1]["json"]["input"] == ["one", "two"]


def test_a_priced_moderation_bills_its_text_tokens(media_env):
    ModelPriceFactory(
        group=media_env.group,
        model="omni-moderation-latest",
        mode="moderation",
        components=[{"unit": "input", "rate": "1.00"}],
    )

    media_env.client.moderations.create(
        input="one two three four", extra_headers={"x-request-id": "mod-priced"}
    )

    record = settled("mod-priced")
    # Counted locally (OpenAI reports no usage): 4 tokens at $1/M.
    assert (record.input_tokens, record.estimated, record.cost_pico) == (4, True, 4 * 10**6)


def test_moderations_need_a_key_and_keep_to_its_rate_limit(media_env):
    response = media_env.post(
        "/v1/moderations", json={"input": "hi"}, headers={"authorization": "Bearer sk-nope"}
    )
    assert error_of(response, 401)["code"] == "invalid_api_key"

    limited = ApiKeyFactory(account=media_env.account, rpm_limit=1)
    headers = {"authorization": f"Bearer {limited.secret}"}
    first = media_env.http.post("/v1/moderations", json={"input": "hi"}, headers=headers)
    second = media_env.http.post("/v1/moderations", json={"input": "hi"}, headers=headers)

    assert first.status_code == 200
    assert error_of(second, 429)["code"] == "rate_limit_exceeded"
    assert "retry-after" in second.headers
    assert media_env.upstream.calls == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "input"),
        ({"input": 3}, "input"),
        ({"input": []}, "input"),
        ({"input": ["ok", 3]}, "input[0]"),
        ({"input": [{"type": "text"}]}, "input[0]"),
        ({"input": [{"type": "image_url", "image_url": {}}]}, "input[0]"),
        ({"input": "x", "model": ""}, "model"),
    ],
)
def test_bad_input_is_a_400_naming_it(media_env, body, param):
    before = money(media_env)
    assert error_of(media_env.post("/v1/moderations", json=body), 400)["param"] == param
    assert media_env.upstream.calls == 0
    assert money(media_env) == before
