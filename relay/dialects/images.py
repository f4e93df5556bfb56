"""``POST /v1/images/generations`` (JSON) and ``POST /v1/images/edits`` (a form with
one or several ``image`` uploads and an optional ``mask``): OpenAI's Images API.

Billed per image returned, by size and quality: the request's, or where it gives
none its model family's default (DALL·E: ``1024x1024``, ``standard``; the GPT image
models: ``auto``), and ``auto`` as the answer reports it (GPT image answers carry
``size`` and ``quality``); an answer that does not say is billed as ``1024x1024``
at ``high``, the quality ``auto`` picks. The GPT image models also report tokens
(``usage``: text and image input, image output), billed when the price has rates
for them: a price says which units count.
"""

import re
from dataclasses import replace
from typing import Any

from core.money import Units, images_of

from ..errors import invalid_request
from ..fields import as_count, as_dict, as_list
from ..tokens import count_text
from .base import Body, Dialect, RequestParams, UpstreamReply
from .checks import model_param, optional_string, positive_int, stored_text
from .media import (
    MEBIBYTE,
    form_choice,
    form_flag,
    form_int,
    form_prompt_estimate,
    form_text,
    media_usage,
    upload_checked,
    uploads_of,
)
from .multipart import parse_form

# OpenAI's bounds: 1 to 10 images, 16 input images per edit, 50 MB per edit.
MAX_IMAGES = 10
MAX_EDIT_IMAGES = 16
EDIT_BODY_BYTES = 50 * MEBIBYTE
# What an edit takes (OpenAI's GPT image models: png, webp, jpg).
EDIT_FORMATS = ("png", "jpeg", "webp")
# Image output tokens held for per image asked for: GPT Image 1 at high quality
# spends 6,240 on its largest standard size.
IMAGE_OUTPUT_RESERVE = 8192
# Image input tokens held for per uploaded image (and mask) of an edit: GPT Image 1
# reads a picture as a few 512-pixel tiles, and at high input fidelity adds up to
# 6,240 more.
IMAGE_INPUT_RESERVE = 8192
# Size and quality by model family when the request gives none, longest prefix first.
FAMILY_DEFAULTS = (
    ("dall-e-2", ("1024x1024", "standard")),
    ("dall-e-3", ("1024x1024", "standard")),
    ("gpt-image", ("auto", "auto")),
    ("chatgpt-image", ("auto", "auto")),
)
OTHER_DEFAULTS = ("auto", "auto")
# What ``auto`` is billed as when the answer does not say what it chose.
AUTO_BILLED = ("1024x1024", "high")
_SIZE = re.compile(r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$")
_QUALITY = re.compile(r"^[a-z]{1,16}$")


def family_defaults(model: str) -> tuple[str, str]:
    for prefix, defaults in FAMILY_DEFAULTS:
        if model.startswith(prefix):
            return defaults
    return OTHER_DEFAULTS


def _size_quality(model: str, size: Any, quality: Any) -> tuple[str, str]:
    default_size, default_quality = family_defaults(model)
    if size is not None and not (isinstance(size, str) and _SIZE.match(size)):
        raise invalid_request(
            "`size` must be `auto` or a size as WIDTHxHEIGHT (`1024x1024`).", param="size"
        )
    if quality is not None and not (isinstance(quality, str) and _QUALITY.match(quality)):
        raise invalid_request(
            "`quality` must be a quality such as `standard`, `hd`, `low`, `medium`, "
            "`high` or `auto`.",
            param="quality",
        )
    return size or default_size, quality or default_quality


def _params(model: str, n: int, size: str, quality: str, user: str) -> RequestParams:
    return RequestParams(
        model=model,
        stream=False,
        include_usage=False,
        max_tokens=IMAGE_OUTPUT_RESERVE,
        n=n,
        user=user,
        units=Units(images=images_of({(size, quality): n})),
    )


def reported(data: dict[str, Any]) -> Units | None:
    """The tokens a GPT image answer reports (``usage``: ``input_tokens`` with
    ``input_tokens_details`` of text and image tokens, ``output_tokens``, image tokens
    unless ``output_tokens_details`` says otherwise), each in one kind."""
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = as_count(usage.get("input_tokens"))
    details = as_dict(usage.get("input_tokens_details"))
    cached = min(as_count(details.get("cached_tokens")), prompt)
    image_in = min(as_count(details.get("image_tokens")), prompt - cached)
    completion = as_count(usage.get("output_tokens"))
    out_details = usage.get("output_tokens_details")
    if isinstance(out_details, dict):
        image_out = min(as_count(out_details.get("image_tokens")), completion)
    else:
        image_out = completion
    return Units(
        input=prompt - cached - image_in,
        cache_read=cached,
        image_input=image_in,
        output=completion - image_out,
        image_output=image_out,
    )


class Images(Dialect):
    mode = "image_generation"

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        prompt = body.get("prompt")
        return count_text(prompt) if isinstance(prompt, str) else 0

    def estimate(self, body: dict[str, Any], answer: dict[str, Any]) -> Units:
        return Units(input=self.prompt_tokens(body))

    def units(self, params: RequestParams, reported: Units, reply: UpstreamReply | None) -> Units:
        """The images the answer returned, at the size and quality asked for (``auto``
        as the answer reports it), with the tokens reported."""
        assert params.units is not None and reply is not None
        ((size, quality, _),) = params.units.images
        answer = reply.body
        if size == "auto":
            said = answer.get("size")
            size = stored_text(said) if isinstance(said, str) and said else AUTO_BILLED[0]
        if quality == "auto":
            said = answer.get("quality")
            quality = stored_text(said) if isinstance(said, str) and said else AUTO_BILLED[1]
        returned = len(as_list(answer.get("data")))
        return replace(reported, images=images_of({(size, quality): returned}))

    def render(self, reply: UpstreamReply, tokens: Units, cost: int) -> dict[str, Any]:
        reply.body["usage"] = media_usage(tokens, cost, reply.upstream_usage)
        return reply.body


class ImageGenerations(Images):
    name = "images.generations"
    path = "/v1/images/generations"

    def validate(self, body: dict[str, Any]) -> RequestParams:
        model = model_param(body)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise invalid_request("`prompt` must be a non-empty string.", param="prompt")
        n = positive_int(body, "n", MAX_IMAGES) or 1
        size, quality = _size_quality(model, body.get("size"), body.get("quality"))
        response_format = body.get("response_format")
        if response_format is not None and response_format not in ("url", "b64_json"):
            raise invalid_request(
                "`response_format` must be `url` or `b64_json`.", param="response_format"
            )
        if body.get("stream") not in (None, False):
            raise invalid_request(
                "Streamed image generation is not offered here; leave `stream` unset.",
                param="stream",
            )
        return _params(model, n, size, quality, optional_string(body, "user"))


class ImageEdits(Images):
    name = "images.edits"
    path = "/v1/images/edits"
    max_body_bytes = EDIT_BODY_BYTES

    def parse(self, raw: Body, content_type: str | None) -> dict[str, Any]:
        return parse_form(raw, content_type)

    def validate(self, body: dict[str, Any]) -> RequestParams:
        model = form_text(body, "model", required=True)
        assert model is not None
        images = uploads_of(body, "image")
        if not images:
            raise invalid_request("You must provide an `image` file to edit.", param="image")
        if len(images) > MAX_EDIT_IMAGES:
            raise invalid_request(
                f"`image` may hold at most {MAX_EDIT_IMAGES} files.", param="image"
            )
        field = "image[]" if "image[]" in body else "image"
        for upload in images:
            upload_checked(upload, field, "an image", EDIT_FORMATS)
        if body.get("mask") is not None:
            upload_checked(body["mask"], "mask", "an image", ("png",))
        form_text(body, "prompt", required=True)
        n = form_int(body, "n", 1, MAX_IMAGES) or 1
        size, quality = _size_quality(model, form_text(body, "size"), form_text(body, "quality"))
        form_choice(body, "response_format", ("url", "b64_json"))
        if form_flag(body, "stream"):
            raise invalid_request(
                "Streamed image edits are not offered here; leave `stream` unset.",
                param="stream",
            )
        user = form_text(body, "user") or ""
        return _params(model, n, size, quality, stored_text(user))

    def prompt_estimate(self, raw: Body, body: dict[str, Any]) -> int:
        """The text fields' tokens and, for the models that bill pictures read as
        tokens, the most each uploaded image and the mask may count as: the hold
        then covers an edit of many large images."""
        pictures = len(uploads_of(body, "image")) + (body.get("mask") is not None)
        return form_prompt_estimate(body) + pictures * IMAGE_INPUT_RESERVE


IMAGE_GENERATIONS = ImageGenerations()
IMAGE_EDITS = ImageEdits()
