"""Request body checks for ``/v1/chat/completions``.

Only what the gateway must understand is checked; every other field is passed
upstream untouched, unknown ones included.
"""

from dataclasses import dataclass
from typing import Any

import orjson

from .errors import invalid_request

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_N = 128


@dataclass(frozen=True, slots=True)
class ChatParams:
    model: str
    stream: bool
    # The client asked for the usage chunk at the end of a stream.
    include_usage: bool
    max_tokens: int | None
    n: int
    user: str


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise invalid_request("The request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(
            f"We could not parse the JSON body of your request ({exc.msg} at position {exc.pos})."
        ) from None
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _range(body: dict, name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_number(value):
        raise invalid_request(f"`{name}` must be a number.", param=name)
    if not low <= value <= high:
        raise invalid_request(
            f"`{name}` must be between {low:g} and {high:g}; got {value}.", param=name
        )


def _positive_int(body: dict, name: str, maximum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise invalid_request(f"`{name}` must be an integer.", param=name)
    if value < 1:
        raise invalid_request(f"`{name}` must be at least 1; got {value}.", param=name)
    if maximum is not None and value > maximum:
        raise invalid_request(f"`{name}` must be at most {maximum}; got {value}.", param=name)
    return value


def model_param(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise invalid_request("You must provide a model parameter.", param="model")
    if not isinstance(model, str) or not model.strip():
        raise invalid_request("`model` must be a non-empty string.", param="model")
    return model


def validate_chat(body: dict[str, Any]) -> ChatParams:
    model = model_param(body)
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise invalid_request("`messages` must be an array of message objects.", param="messages")
    if not messages:
        raise invalid_request("`messages` must contain at least one message.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid_request(f"`messages[{i}]` must be an object.", param=f"messages[{i}]")
        role = message.get("role")
        if role not in ROLES:
            raise invalid_request(
                f"`messages[{i}].role` must be one of {', '.join(sorted(ROLES))}.",
                param=f"messages[{i}].role",
            )
    max_tokens = _positive_int(body, "max_tokens")
    max_completion_tokens = _positive_int(body, "max_completion_tokens")
    _range(body, "temperature", 0, 2)
    _range(body, "top_p", 0, 1)
    _range(body, "presence_penalty", -2, 2)
    _range(body, "frequency_penalty", -2, 2)
    n = _positive_int(body, "n", MAX_N) or 1

    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid_request("`stream` must be a boolean.", param="stream")
    stream_options = body.get("stream_options")
    include_usage = False
    if stream_options is not None:
        if not stream:
            raise invalid_request(
                "`stream_options` is only allowed when `stream` is true.", param="stream_options"
            )
        if not isinstance(stream_options, dict):
            raise invalid_request("`stream_options` must be an object.", param="stream_options")
        include_usage = stream_options.get("include_usage") is True

    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid_request("`user` must be a string.", param="user")

    return ChatParams(
        model=model,
        stream=bool(stream),
        include_usage=include_usage,
        max_tokens=max_completion_tokens or max_tokens,
        n=n,
        user=(user or "")[:256],
    )
