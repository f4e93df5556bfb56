"""``POST /v1/moderations``: OpenAI's moderations, of text and images.

``input`` is a string, an array of strings, or an array of parts (``text`` with a
``text``, ``image_url`` with an ``image_url.url``); ``model`` defaults to
``omni-moderation-latest``, as OpenAI's does. OpenAI charges nothing for it, and
its answers report no usage: a request is billed as its price says (free with a
price whose only component is a zero-rate ``request``; its text tokens, counted
locally, where the price has an input rate), and is authenticated, rate-limited
and recorded like any other.
"""

from typing import Any

from core.money import Units

from ..errors import invalid_request
from ..tokens import count_text
from .base import Dialect, RequestParams, UpstreamReply
from .checks import model_param
from .media import media_usage

DEFAULT_MODEL = "omni-moderation-latest"
MAX_INPUTS = 2048


def _part_ok(part: Any) -> bool:
    if not isinstance(part, dict):
        return False
    if part.get("type") == "text":
        return isinstance(part.get("text"), str)
    if part.get("type") == "image_url":
        image = part.get("image_url")
        return isinstance(image, dict) and isinstance(image.get("url"), str) and bool(image["url"])
    return False


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    texts = []
    for item in value if isinstance(value, list) else ():
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            texts.append(item["text"])
    return texts


class Moderations(Dialect):
    name = "moderations"
    path = "/v1/moderations"
    mode = "moderation"

    def validate(self, body: dict[str, Any]) -> RequestParams:
        model = model_param(body) if "model" in body else DEFAULT_MODEL
        value = body.get("input")
        if isinstance(value, list):
            if not value:
                raise invalid_request("`input` must not be empty.", param="input")
            if len(value) > MAX_INPUTS:
                raise invalid_request(
                    f"`input` may hold at most {MAX_INPUTS} items.", param="input"
                )
            strings = all(isinstance(v, str) for v in value)
            for i, item in enumerate(value):
                if not (strings or _part_ok(item)):
                    raise invalid_request(
                        f"`input[{i}]` must be a text part (`type: text` with a `text`) or an "
                        "image part (`type: image_url` with an `image_url.url`), or every "
                        "item a string.",
                        param=f"input[{i}]",
                    )
        elif not isinstance(value, str):
            raise invalid_request(
                "`input` must be a string, an array of strings, or an array of text and "
                "image parts.",
                param="input",
            )
        return RequestParams(
            model=model,
            stream=False,
            include_usage=False,
            max_tokens=None,
            n=1,
            user="",
            prompt_only=True,
        )

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        return sum(count_text(text) for text in _texts(body.get("input")))

    def estimate(self, body: dict[str, Any], answer: dict[str, Any]) -> Units:
        return Units(input=self.prompt_tokens(body))

    def render(self, reply: UpstreamReply, tokens: Units, cost: int) -> dict[str, Any]:
        reply.body["usage"] = media_usage(tokens, cost, reply.upstream_usage)
        return reply.body


MODERATIONS = Moderations()
