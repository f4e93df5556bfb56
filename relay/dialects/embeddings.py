"""``POST /v1/embeddings``: OpenAI embeddings. Bills input tokens only; never streams."""

from typing import Any

from core.money import Units

from ..errors import invalid_request
from ..tokens import count_text
from .base import Dialect, RequestParams, UpstreamReply
from .checks import is_int, model_param, optional_string, positive_int
from .usage import usage_payload

MAX_INPUTS = 2048


class Embeddings(Dialect):
    name = "embeddings"
    path = "/v1/embeddings"
    mode = "embedding"

    def validate(self, body: dict[str, Any]) -> RequestParams:
        model = model_param(body)
        value = body.get("input")
        ok = (isinstance(value, str) and value != "") or (
            isinstance(value, list)
            and value
            and (
                all(isinstance(v, str) and v for v in value)
                or all(is_int(v) for v in value)
                or all(isinstance(v, list) and v and all(is_int(t) for t in v) for v in value)
            )
        )
        if not ok:
            raise invalid_request(
                "`input` must be a non-empty string, an array of non-empty strings, "
                "or token arrays.",
                param="input",
            )
        if isinstance(value, list) and len(value) > MAX_INPUTS:
            raise invalid_request(f"`input` may hold at most {MAX_INPUTS} items.", param="input")
        positive_int(body, "dimensions")
        encoding = body.get("encoding_format")
        if encoding is not None and encoding not in ("float", "base64"):
            raise invalid_request(
                "`encoding_format` must be `float` or `base64`.", param="encoding_format"
            )
        return RequestParams(
            model=model,
            stream=False,
            include_usage=False,
            max_tokens=None,
            n=1,
            user=optional_string(body, "user"),
            prompt_only=True,
        )

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        value = body.get("input")
        items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        if items and isinstance(items[0], list):
            return sum(len(i) if isinstance(i, list) else 1 for i in items)
        return sum(count_text(i) if isinstance(i, str) else 1 for i in items)

    def estimate(self, body: dict[str, Any], answer: dict[str, Any]) -> Units:
        return Units(input=self.prompt_tokens(body))

    def render(self, reply: UpstreamReply, tokens: Units, cost: int) -> dict[str, Any]:
        reply.body["usage"] = usage_payload(tokens, cost, reply.upstream_usage)
        return reply.body


EMBEDDINGS = Embeddings()
