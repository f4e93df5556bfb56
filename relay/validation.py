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
# Far beyond any model's output, and low enough that the hold for ``n`` choices of it
# still fits the ledger's 64-bit amounts.
MAX_TOKENS = 2**31 - 1


@dataclass(frozen=True, slots=True)
class RequestParams:
    """What the gateway needs to know about a request, whatever its endpoint."""

    model: str
    stream: bool
    # The client asked for the usage chunk at the end of a stream.
    include_usage: bool
    # Completion tokens the request may produce (all choices); None: not set.
    max_tokens: int | None
    n: int
    user: str
    # Endpoint without any completion (embeddings).
    prompt_only: bool = False


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
    try:
        # The parser accepts deeper nesting than the serialiser that forwards the body
        # upstream; refuse it here, before any money is held for it.
        orjson.dumps(body)
    except TypeError:
        raise invalid_request("The JSON body of your request is nested too deeply.") from None
    return body


def _text(value: str) -> str:
    """A caller's string as it may be stored: PostgreSQL text cannot hold NUL."""
    return value[:256].replace("\x00", "")


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


def validate_chat(body: dict[str, Any]) -> RequestParams:
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
        if not isinstance(role, str) or role not in ROLES:
            raise invalid_request(
                f"`messages[{i}].role` must be one of {', '.join(sorted(ROLES))}.",
                param=f"messages[{i}].role",
            )
        content = message.get("content")
        if not isinstance(content, str | list | None):
            raise invalid_request(
                f"`messages[{i}].content` must be a string or an array of content parts.",
                param=f"messages[{i}].content",
            )
        _typed_objects(content, f"messages[{i}].content", "content part")
        _tool_calls(message.get("tool_calls"), f"messages[{i}].tool_calls")
    max_tokens = _positive_int(body, "max_tokens", MAX_TOKENS)
    max_completion_tokens = _positive_int(body, "max_completion_tokens", MAX_TOKENS)
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
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(x, str) for x in stop))
    ):
        raise invalid_request("`stop` must be a string or an array of strings.", param="stop")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid_request("`tools` must be an array of tool objects.", param="tools")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                raise invalid_request(f"`tools[{i}]` must be an object.", param=f"tools[{i}]")
    tool_choice = body.get("tool_choice")
    if tool_choice is not None and not isinstance(tool_choice, str | dict):
        raise invalid_request("`tool_choice` must be a string or an object.", param="tool_choice")

    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid_request("`user` must be a string.", param="user")

    return RequestParams(
        model=model,
        stream=bool(stream),
        include_usage=include_usage,
        max_tokens=max_completion_tokens or max_tokens,
        n=n,
        user=_text(user or ""),
    )


def _typed_objects(content: Any, where: str, what: str, sep: str = "[{}]") -> None:
    """Each item of an array of content parts (or blocks) is an object with a string
    ``type``."""
    if not isinstance(content, list):
        return
    for j, part in enumerate(content):
        here = where + sep.format(j)
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise invalid_request(f"`{here}` must be a {what} object with a `type`.", param=here)


def _tool_calls(calls: Any, where: str) -> None:
    """An assistant message's ``tool_calls``: function calls, each naming its function."""
    if calls is None:
        return
    if not isinstance(calls, list):
        raise invalid_request(f"`{where}` must be an array of tool calls.", param=where)
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid_request(
                f"`{where}[{j}]` must be a tool call with a `function` object naming the function.",
                param=f"{where}[{j}].function",
            )


def _string(body: dict, name: str) -> str:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid_request(f"`{name}` must be a string.", param=name)
    return _text(value or "")


def validate_messages(body: dict[str, Any]) -> RequestParams:
    """An Anthropic Messages API request (``POST /v1/messages``)."""
    model = model_param(body)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise invalid_request("`max_tokens` is required.", param="max_tokens")
    _positive_int(body, "max_tokens", MAX_TOKENS)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_request("`messages` must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise invalid_request(
                f"`messages.{i}.role` must be `user` or `assistant`.", param=f"messages.{i}.role"
            )
        if not isinstance(message.get("content"), str | list):
            raise invalid_request(
                f"`messages.{i}.content` must be a string or an array of content blocks.",
                param=f"messages.{i}.content",
            )
        _typed_objects(message["content"], f"messages.{i}.content", "content block", ".{}")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise invalid_request(
            "`system` must be a string or an array of text blocks.", param="system"
        )
    _typed_objects(system, "system", "text block", ".{}")
    _range(body, "temperature", 0, 1)
    _range(body, "top_p", 0, 1)
    if body.get("top_k") is not None and (not _is_int(body["top_k"]) or body["top_k"] < 0):
        raise invalid_request("`top_k` must be a non-negative integer.", param="top_k")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid_request("`stream` must be a boolean.", param="stream")
    stops = body.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
    ):
        raise invalid_request(
            "`stop_sequences` must be an array of strings.", param="stop_sequences"
        )
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    return RequestParams(
        model=model,
        stream=bool(stream),
        include_usage=True,
        max_tokens=max_tokens,
        n=1,
        user=_text(user) if isinstance(user, str) else "",
    )


def validate_embeddings(body: dict[str, Any]) -> RequestParams:
    model = model_param(body)
    value = body.get("input")
    ok = (isinstance(value, str) and value != "") or (
        isinstance(value, list)
        and value
        and (
            all(isinstance(v, str) and v for v in value)
            or all(_is_int(v) for v in value)
            or all(isinstance(v, list) and v and all(_is_int(t) for t in v) for v in value)
        )
    )
    if not ok:
        raise invalid_request(
            "`input` must be a non-empty string, an array of non-empty strings, or token arrays.",
            param="input",
        )
    if isinstance(value, list) and len(value) > 2048:
        raise invalid_request("`input` may hold at most 2048 items.", param="input")
    _positive_int(body, "dimensions")
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
        user=_string(body, "user"),
        prompt_only=True,
    )
