"""``POST /v1/completions``: OpenAI's legacy completions (a prompt in, text out; what
fill-in-the-middle code completion still speaks).

Bills like chat completions: prompt tokens (cache reads apart) and completion tokens
for every candidate generated (``best_of`` of them when it is set). Answers and the
final usage chunk carry the ``usage`` object of ``relay.dialects.usage`` with the
cost; a stream's usage chunk reaches the client only if it asked for it
(``stream_options.include_usage``). Every other field (``suffix``, ``echo``,
``logprobs``...) goes upstream as it came.
"""

from typing import Any

from core.money import Units

from ..errors import invalid_request
from ..fields import as_dict, as_list, as_str
from ..tokens import count_text
from .base import Accounting, Dialect, RequestParams, UpstreamReply
from .chat import MAX_N, ChatStreamFormat
from .checks import (
    MAX_TOKENS,
    is_int,
    model_param,
    number_in_range,
    optional_string,
    positive_int,
    stream_flag,
    stream_usage_asked,
)
from .usage import usage_payload

MAX_PROMPTS = 2048
MAX_BEST_OF = 20
MAX_LOGPROBS = 5


def _prompt(body: dict[str, Any]) -> None:
    value = body.get("prompt")
    ok = isinstance(value, str) or (
        isinstance(value, list)
        and value
        and (
            all(isinstance(v, str) for v in value)
            or all(is_int(v) for v in value)
            or all(isinstance(v, list) and v and all(is_int(t) for t in v) for v in value)
        )
    )
    if not ok:
        raise invalid_request(
            "`prompt` must be a string, an array of strings, an array of tokens, "
            "or an array of token arrays.",
            param="prompt",
        )
    if isinstance(value, list) and len(value) > MAX_PROMPTS:
        raise invalid_request(f"`prompt` may hold at most {MAX_PROMPTS} items.", param="prompt")


def _options(body: dict[str, Any], n: int, stream: bool) -> int:
    """The other fields the gateway reads; returns the candidates generated."""
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise invalid_request("`suffix` must be a string.", param="suffix")
    if body.get("echo") is not None and not isinstance(body["echo"], bool):
        raise invalid_request("`echo` must be a boolean.", param="echo")
    logprobs = body.get("logprobs")
    if logprobs is not None and (not is_int(logprobs) or not 0 <= logprobs <= MAX_LOGPROBS):
        raise invalid_request(
            f"`logprobs` must be an integer from 0 to {MAX_LOGPROBS}.", param="logprobs"
        )
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(x, str) for x in stop))
    ):
        raise invalid_request("`stop` must be a string or an array of strings.", param="stop")
    if body.get("logit_bias") is not None and not isinstance(body["logit_bias"], dict):
        raise invalid_request("`logit_bias` must be an object.", param="logit_bias")
    best_of = positive_int(body, "best_of", MAX_BEST_OF)
    if best_of is None:
        return n
    if best_of < n:
        raise invalid_request(
            f"`best_of` must be at least `n` ({n}); got {best_of}.", param="best_of"
        )
    if stream and best_of > 1:
        raise invalid_request("`best_of` cannot be used with `stream`.", param="best_of")
    return best_of


def _prompt_tokens(value: Any) -> int:
    if isinstance(value, str):
        return count_text(value)
    items = as_list(value)
    if items and all(is_int(t) for t in items):
        return len(items)
    return sum(count_text(i) if isinstance(i, str) else len(as_list(i)) for i in items)


class CompletionsAccounting(Accounting):
    """Counts the text handed to the client per choice."""

    def __init__(self, dialect: Dialect, body: dict[str, Any]) -> None:
        super().__init__(dialect, body)
        self.text: list[str] = []

    def delivered(self, data: dict[str, Any]) -> None:
        for choice in as_list(data.get("choices")):
            self.text.append(as_str(as_dict(choice).get("text")))

    def output(self) -> Units:
        return Units(output=count_text("".join(self.text)))


class Completions(Dialect):
    name = "completions"
    path = "/v1/completions"
    mode = "completion"

    def validate(self, body: dict[str, Any]) -> RequestParams:
        model = model_param(body)
        _prompt(body)
        max_tokens = positive_int(body, "max_tokens", MAX_TOKENS)
        number_in_range(body, "temperature", 0, 2)
        number_in_range(body, "top_p", 0, 1)
        number_in_range(body, "presence_penalty", -2, 2)
        number_in_range(body, "frequency_penalty", -2, 2)
        n = positive_int(body, "n", MAX_N) or 1
        stream = stream_flag(body)
        include_usage = stream_usage_asked(body, stream)
        generated = _options(body, n, stream)
        return RequestParams(
            model=model,
            stream=stream,
            include_usage=include_usage,
            max_tokens=max_tokens,
            n=generated,
            user=optional_string(body, "user"),
        )

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        suffix = body.get("suffix")
        return _prompt_tokens(body.get("prompt")) + count_text(
            suffix if isinstance(suffix, str) else ""
        )

    def estimate(self, body: dict[str, Any], answer: dict[str, Any]) -> Units:
        text = "".join(as_str(as_dict(c).get("text")) for c in as_list(answer.get("choices")))
        return Units(input=self.prompt_tokens(body), output=count_text(text))

    def render(self, reply: UpstreamReply, tokens: Units, cost: int) -> dict[str, Any]:
        reply.body["usage"] = usage_payload(tokens, cost, reply.upstream_usage)
        return reply.body

    def accounting(self, body: dict[str, Any]) -> CompletionsAccounting:
        return CompletionsAccounting(self, body)

    def stream_format(self, params: RequestParams) -> ChatStreamFormat:
        # Completion chunks are chat chunks with ``text`` in their choices: the same
        # usage chunk is held back and replaced by the billed one.
        return ChatStreamFormat(params.include_usage)


COMPLETIONS = Completions()
