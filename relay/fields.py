"""Reading untrusted JSON.

Requests are checked only as far as the gateway must understand them, and answers
come from upstreams: every field a translation or a count reads may hold any JSON
value. These read a field as the type it should have, or as empty.
"""

from typing import Any

import orjson


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def as_int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def arguments_object(arguments: Any) -> dict[str, Any]:
    """A function call's arguments (a JSON string, or already an object) as an object."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def arguments_text(value: Any) -> str:
    """A tool call's input as the JSON string chat completions carry."""
    return orjson.dumps(value if value is not None else {}).decode()


def as_count(value: Any) -> int:
    """A token count an upstream reported: a non-negative number, or 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return 0
    return int(value)
