"""Checks shared by the dialects' ``validate``: each raises a 400 naming the field."""

from typing import Any

from ..errors import invalid_request

# Far beyond any model's output, and low enough that the hold for ``n`` choices of it
# still fits the ledger's 64-bit amounts.
MAX_TOKENS = 2**31 - 1


def stored_text(value: str) -> str:
    """A caller's string as it may be stored: PostgreSQL text cannot hold NUL."""
    return value[:256].replace("\x00", "")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def number_in_range(body: dict, name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not is_number(value):
        raise invalid_request(f"`{name}` must be a number.", param=name)
    if not low <= value <= high:
        raise invalid_request(
            f"`{name}` must be between {low:g} and {high:g}; got {value}.", param=name
        )


def positive_int(body: dict, name: str, maximum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not is_int(value):
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


def stream_flag(body: dict[str, Any]) -> bool:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid_request("`stream` must be a boolean.", param="stream")
    return bool(stream)


def stream_usage_asked(body: dict[str, Any], stream: bool) -> bool:
    """Whether a stream's client asked for the usage chunk (``stream_options``, only
    allowed with ``stream: true``)."""
    stream_options = body.get("stream_options")
    if stream_options is None:
        return False
    if not stream:
        raise invalid_request(
            "`stream_options` is only allowed when `stream` is true.", param="stream_options"
        )
    if not isinstance(stream_options, dict):
        raise invalid_request("`stream_options` must be an object.", param="stream_options")
    return stream_options.get("include_usage") is True


def optional_string(body: dict, name: str) -> str:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid_request(f"`{name}` must be a string.", param=name)
    return stored_text(value or "")


def typed_objects(content: Any, where: str, what: str, sep: str = "[{}]") -> None:
    """Each item of an array of content parts (or blocks) is an object with a string
    ``type``."""
    if not isinstance(content, list):
        return
    for j, part in enumerate(content):
        here = where + sep.format(j)
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise invalid_request(f"`{here}` must be a {what} object with a `type`.", param=here)
