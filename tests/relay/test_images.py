"""Images through the official OpenAI client and a loopback upstream: billed per image
returned by size and quality, or by the tokens a GPT image model reports."""

import base64

import openai
import pytest

from billing.models import Hold
from tests.support.factories import AccountFactory, ApiKeyFactory, ChannelFactory
from tests.support.media import jpeg_bytes, money, png, settled, wav
from tests.support.relay import error_of
from tests.support.waiting import wait_for

PICO = 10**12


def test_images_are_billed_per_image_by_the_size_and_quality_asked_for(media_env):
    two = media_env.client.images.generate(
        model="dall-e-3",
        prompt="A lighthouse at dawn",
        n=2,
        response_format="b64_json",
        extra_headers={"x-request-id": "img-square"},
    )
    three = media_env.client.images.generate(
        model="dall-e-3",
        prompt="A lighthouse at dusk",
        n=3,
        size="1792x1024",
        quality="hd",
        extra_headers={"x-request-id": "img-wide"},
    )

    assert len(two.data) == 2 and base64.b64decode(two.data[0].b64_json).startswith(b"\x89PNG")
    # dall-e-3 unless told otherwise: 1024x1024 at standard, $0.04 each.
    assert two.usage.model_extra["cost"] == "0.080000"
    assert two.usage.model_extra["images"] == 2
    square = settled("img-square")
    assert (square.images, square.unit_details) == (2, {"images": {"1024x1024/standard": 2}})
    assert square.cost_pico == 8 * PICO // 100
    # The upstream reported no usage, but nothing counted locally is billed: exact.
    assert square.estimated is False
    assert square.price_snapshot["components"] == [
        {
            "unit": "image",
            "rate": "0.04",
            "per": "image",
            "size": "1024x1024",
            "quality": "standard",
            "quantity": 2,
            "cost": "0.080000",
        }
    ]
    # Three wide HD images at $0.12.
    wide = settled("img-wide")
    assert wide.unit_details == {"images": {"1792x1024/hd": 3}}
    assert wide.cost_pico == 36 * PICO // 100
    assert three.usage.model_extra["cost"] == "0.360000"
    # What the client asked for went upstream as it was.
    sent = media_env.upstream.requests[1]["json"]
    assert sent == {
        "model": "dall-e-3",
        "prompt": "A lighthouse at dusk",
        "n": 3,
        "size": "1792x1024",
        "quality": "hd",
    }
    assert media_env.refresh().balance == 5_000_000 - 80_000 - 360_000


def test_only_the_images_the_answer_returned_are_billed(media_env):
    media_env.upstream.then(images=1)

    answer = media_env.client.images.generate(
        model="dall-e-3", prompt="Four cats", n=4, extra_headers={"x-request-id": "img-fewer"}
    )

    assert len(answer.data) == 1
    record = settled("img-fewer")
    assert record.images == 1 and record.cost_pico == 4 * PICO // 100
    # The hold covered four; the rest was given back.
    assert media_env.refresh().held == 0


def test_gpt_image_tokens_are_billed_by_kind(media_env):
    media_env.upstream.then(
        size="1024x1024",
        quality="high",
        usage={
            "input_tokens": 50,
            "input_tokens_details": {"text_tokens": 40, "image_tokens": 10},
            "output_tokens": 4160,
            "total_tokens": 4210,
        },
    )

    answer = media_env.client.images.generate(
        model="gpt-image-1", prompt="A red fox", extra_headers={"x-request-id": "img-tokens"}
    )

    record = settled("img-tokens")
    assert (record.input_tokens, record.image_input_tokens, record.image_output_tokens) == (
        40,
        10,
        4160,
    )
    assert record.output_tokens == 0 and not record.estimated
    # 40 text at $5/M, 10 image input at $10/M, 4,160 image output at $40/M.
    assert record.cost_pico == (40 * 5 + 10 * 10 + 4160 * 40) * 10**6
    usage = answer.usage
    assert (usage.input_tokens, usage.output_tokens) == (50, 4160)
    assert usage.input_tokens_details.image_tokens == 10
    assert usage.model_extra["cost"] == "0.166700"
    # The image is counted too; this price has no per-image rate, so it costs nothing.
    assert record.unit_details == {"images": {"1024x1024/high": 1}}


@pytest.mark.parametrize(
    ("said", "billed", "cost"),
    [
        ({"size": "1536x1024", "quality": "high"}, "1536x1024/high", "0.052"),
        ({}, "1024x1024/high", "0.036"),
    ],
    ids=["as-reported", "not-reported"],
)
def test_auto_is_billed_as_the_answer_reports_it(media_env, said, billed, cost):
    media_env.upstream.then(**said)

    media_env.client.images.generate(
        model="gpt-image-1-mini",
        prompt="A bridge",
        extra_headers={"x-request-id": f"img-auto-{len(said)}"},
    )

    record = settled(f"img-auto-{len(said)}")
    assert record.unit_details == {"images": {billed: 1}}
    assert record.price_snapshot["cost"] == f"{cost}000"


def test_an_edit_sends_its_images_and_mask_as_they_came(media_env):
    first, second, mask = png(4), png(6), png(4)

    answer = media_env.client.images.edit(
        model="dall-e-3",
        image=[("a.png", first, "image/png"), ("b.png", second, "image/png")],
        mask=("mask.png", mask, "image/png"),
        prompt="Add a hat",
        n=2,
        extra_headers={"x-request-id": "img-edit"},
    )

    assert len(answer.data) == 2
    sent = media_env.upstream.requests[0]
    assert sent["path"] == "/images/edits"
    assert sent["form"] == {"model": "dall-e-3", "prompt": "Add a hat", "n": "2"}
    assert sent["files"] == {
        "image[]": [("a.png", "image/png", len(first)), ("b.png", "image/png", len(second))],
        "mask": [("mask.png", "image/png", len(mask))],
    }
    assert "authorization" in sent["headers"]
    record = settled("img-edit")
    assert record.endpoint == "images.edits"
    assert record.cost_pico == 8 * PICO // 100


def test_one_image_may_be_sent_as_image(media_env):
    media_env.client.images.edit(
        model="gpt-image-1",
        image=("photo.jpg", jpeg_bytes(), "image/jpeg"),
        prompt="Brighter",
    )

    assert media_env.upstream.requests[0]["files"]["image"][0][:2] == ("photo.jpg", "image/jpeg")


@pytest.mark.parametrize(
    ("files", "param"),
    [
        ({"image": ("a.png", b"plain text, not a picture", "image/png")}, "image"),
        ({"image": ("a.png", jpeg_bytes(), "image/png")}, "image"),
        ({"image": ("a.wav", wav(1), "audio/wav")}, "image"),
        ({"image": ("a.png", png(), "image/png"), "mask": ("m.jpg", jpeg_bytes(), None)}, "mask"),
        ({"mask": ("m.png", png(), "image/png")}, "image"),
        ({"image": ("a.png", b"", "image/png")}, "image"),
    ],
    ids=["not-an-image", "jpeg-said-png", "audio", "mask-not-png", "no-image", "empty"],
)
def test_an_upload_that_is_not_the_image_it_says_is_a_400_and_costs_nothing(
    media_env, files, param
):
    before = money(media_env)

    response = media_env.post(
        "/v1/images/edits",
        data={"model": "dall-e-3", "prompt": "Add a hat"},
        files={k: v if v[2] else v[:2] for k, v in files.items()},
    )

    assert error_of(response, 400)["param"] == param
    assert media_env.upstream.calls == 0
    assert money(media_env) == before


def test_an_edit_over_50_mb_is_a_413_and_costs_nothing(media_env):
    before = money(media_env)
    huge = png() + bytes(50 * 1024 * 1024)

    response = media_env.post(
        "/v1/images/edits",
        data={"model": "dall-e-3", "prompt": "Add a hat"},
        files={"image": ("huge.png", huge, "image/png")},
    )

    error = error_of(response, 413)
    assert error["code"] == "request_too_large" and str(50 * 1024 * 1024) in error["message"]
    assert media_env.upstream.calls == 0
    assert money(media_env) == before


def test_a_json_edit_or_a_bad_generation_is_a_400(media_env):
    response = media_env.post("/v1/images/edits", json={"model": "dall-e-3", "prompt": "x"})
    assert error_of(response, 400)["message"].startswith("This endpoint takes a multipart")
    for body, param in [
        ({"model": "dall-e-3"}, "prompt"),
        ({"model": "dall-e-3", "prompt": "x", "n": 11}, "n"),
        ({"model": "dall-e-3", "prompt": "x", "size": "huge"}, "size"),
        ({"model": "dall-e-3", "prompt": "x", "response_format": "png"}, "response_format"),
        ({"model": "dall-e-3", "prompt": "x", "stream": True}, "stream"),
    ]:
        assert error_of(media_env.post("/v1/images/generations", json=body), 400)["param"] == param
    assert media_env.upstream.calls == 0


def test_failover_before_the_answer_bills_once(media_env, media_upstreams):
    spare = media_upstreams["media"][1]
    media_env.channel.priority = 1
    media_env.channel.save()
    ChannelFactory(
        name="media-spare", base_url=spare.base_url, served_models=["dall-e-3"], priority=0
    )
    media_env.upstream.then(status=503)

    answer = media_env.client.images.generate(
        model="dall-e-3", prompt="x", extra_headers={"x-request-id": "img-failover"}
    )

    assert len(answer.data) == 1
    record = settled("img-failover")
    assert [a["status"] for a in record.attempts] == [503, 200]
    assert record.cost_pico == 4 * PICO // 100
    assert (media_env.upstream.calls, spare.calls) == (1, 1)


def test_an_upstream_refusal_reaches_the_client_and_costs_nothing(media_env):
    before = money(media_env)
    media_env.upstream.then(status=400, message="Your prompt was refused.")

    with pytest.raises(openai.BadRequestError) as refused:
        media_env.client.images.generate(model="dall-e-3", prompt="x")

    assert "Your prompt was refused." in str(refused.value)
    # The hold is released by the refusal's settlement.
    wait_for(lambda: media_env.refresh().held == 0)
    assert media_env.refresh().balance == before.balance


def test_an_edits_hold_covers_the_images_it_uploads(media_env):
    # Sixteen pictures read as tokens: 16 x 6,240 image input tokens at $10/M and one
    # 1024x1024 image out at $40/M, $1.164 in all.
    media_env.upstream.then(
        usage={
            "input_tokens": 16 * 6240 + 9,
            "input_tokens_details": {"text_tokens": 9, "image_tokens": 16 * 6240},
            "output_tokens": 4160,
        }
    )
    pictures = [(f"{i}.png", png(4), "image/png") for i in range(16)]

    media_env.client.images.edit(
        model="gpt-image-1",
        image=pictures,
        prompt="Make them one",
        extra_headers={"x-request-id": "img-many"},
    )

    record = settled("img-many")
    assert record.image_input_tokens == 16 * 6240
    assert record.cost_pico == (9 * 5 + 16 * 6240 * 10 + 4160 * 40) * 10**6
    hold = Hold.objects.get(request_id="img-many")
    assert hold.amount * 10**6 >= record.cost_pico

    # So an account with $1 may edit one picture, but not sixteen.
    poorer = ApiKeyFactory(account=AccountFactory(price_group=media_env.group, credit=1_000_000))
    with openai.OpenAI(
        base_url=f"{media_env.url}/v1", api_key=poorer.secret, max_retries=0
    ) as client:
        client.images.edit(model="gpt-image-1", image=pictures[:1], prompt="Brighter")
        with pytest.raises(openai.PermissionDeniedError) as refused:
            client.images.edit(model="gpt-image-1", image=pictures, prompt="Make them one")
    assert refused.value.code == "insufficient_balance"
    assert media_env.upstream.calls == 2
