"""``POST /v1/messages``: the Anthropic Messages API.

Keeps Anthropic's own usage semantics (``input_tokens`` excludes cache reads and
writes) and adds ``cost`` to the usage of every answer and to the final
``message_delta`` of every stream. The key may come in ``x-api-key``; errors have
Anthropic's shape; responses carry ``request-id`` where the Anthropic SDK looks.
"""

from typing import Any

import orjson

from core.money import Units, pico_to_usd

from .. import sse
from ..errors import ApiError, invalid_request
from ..fields import arguments_text, as_dict, as_list, as_str
from ..tokens import content_text, count_messages, count_text
from .base import Accounting, Dialect, RequestParams, StreamEvent, UpstreamReply, bearer_token
from .checks import (
    MAX_TOKENS,
    is_int,
    model_param,
    number_in_range,
    positive_int,
    stored_text,
    stream_flag,
    typed_objects,
)

# The Anthropic error type for each status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_payload(error: ApiError) -> dict[str, Any]:
    kind = ERROR_TYPES.get(error.status, "api_error")
    if error.status == 403 and error.type == "billing_error":
        kind = "billing_error"
    # Anthropic's errors have no ``param``: they name the field in the message.
    message = f"{error.param}: {error.message}" if error.param else error.message
    return {"type": "error", "error": {"type": kind, "message": message}}


def event_bytes(event: dict[str, Any]) -> bytes:
    """One Messages stream event on the wire."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def anthropic_usage(tokens: Units) -> dict[str, Any]:
    """Units as a Messages ``usage`` object: reasoning is output there, and audio and
    image tokens are input or output; cache writes are split by how long they last
    when some last an hour."""
    usage: dict[str, Any] = {
        "input_tokens": tokens.input + tokens.audio_input + tokens.image_input,
        "cache_creation_input_tokens": tokens.cache_write + tokens.cache_write_1h,
        "cache_read_input_tokens": tokens.cache_read,
        "output_tokens": tokens.completion,
    }
    if tokens.cache_write_1h:
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": tokens.cache_write,
            "ephemeral_1h_input_tokens": tokens.cache_write_1h,
        }
    tools = dict(tokens.tool_calls)
    if tools.get("web_search"):
        usage["server_tool_use"] = {"web_search_requests": tools["web_search"]}
    return usage


# -- counting ------------------------------------------------------------------------


def _block_text(block: dict[str, Any]) -> str:
    """The text of a content block that counts as prompt or output tokens."""
    kind = block.get("type")
    if kind in ("text", "thinking"):
        return as_str(block.get("text")) or as_str(block.get("thinking"))
    if kind == "tool_use":
        return as_str(block.get("name")) + arguments_text(block.get("input"))
    if kind == "tool_result":
        inner = block.get("content")
        return inner if isinstance(inner, str) else content_text(inner)
    if kind == "document":
        source = as_dict(block.get("source"))
        text = as_str(source.get("data")) if source.get("type") == "text" else ""
        return as_str(block.get("title")) + (text or content_text(source.get("content")))
    if kind == "search_result":
        parts = [as_str(block.get("title")), as_str(block.get("source"))]
        return "\n".join([*parts, content_text(block.get("content"))])
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(_block_text(b) for b in as_list(content) if isinstance(b, dict))


# -- streams -----------------------------------------------------------------------------


class MessagesAccounting(Accounting):
    """Counts the text, tool input and thinking handed to the client."""

    def __init__(self, dialect: Dialect, body: dict[str, Any]) -> None:
        super().__init__(dialect, body)
        self.text: list[str] = []

    def delivered(self, data: dict[str, Any]) -> None:
        delta = data.get("delta")
        if data.get("type") != "content_block_delta" or not isinstance(delta, dict):
            return
        if delta.get("type") == "text_delta":
            self.text.append(str(delta.get("text", "")))
        elif delta.get("type") == "input_json_delta":
            self.text.append(str(delta.get("partial_json", "")))
        elif delta.get("type") == "thinking_delta":
            self.text.append(str(delta.get("thinking", "")))

    def output(self) -> Units:
        return Units(output=count_text("".join(self.text)))


class MessagesStreamFormat:
    """Events passed through (byte for byte when unchanged), except the closing
    ``message_delta`` and ``message_stop``: those are held back and sent at the end,
    the delta's usage carrying the cost."""

    content_type = sse.EVENT_STREAM

    def __init__(self) -> None:
        self.delta: dict[str, Any] = {}
        self.usage: dict[str, Any] = {}

    def event(self, event: StreamEvent) -> bytes | None:
        data = event.data
        kind = data.get("type")
        if kind == "message_delta":
            self.delta.update(as_dict(data.get("delta")))
            # Usage is cumulative: the newest value of each field wins.
            self.usage.update(
                {k: v for k, v in as_dict(data.get("usage")).items() if v is not None}
            )
            return None
        if kind == "message_stop":
            return None
        return event.raw if event.raw is not None else event_bytes(data)

    def end(self, tokens: Units, cost: int) -> bytes:
        delta = self.delta or {"stop_reason": "end_turn", "stop_sequence": None}
        usage = {**(self.usage or anthropic_usage(tokens)), "cost": pico_to_usd(cost)}
        return event_bytes({"type": "message_delta", "delta": delta, "usage": usage}) + event_bytes(
            {"type": "message_stop"}
        )

    def error(self, failure: ApiError) -> bytes:
        return event_bytes(error_payload(failure))


class Messages(Dialect):
    name = "messages"
    path = "/v1/messages"

    def key(self, authorization: str | None, x_api_key: str | None) -> str | None:
        # Where the Anthropic SDK sends it; a Bearer token works too.
        return x_api_key or bearer_token(authorization)

    def validate(self, body: dict[str, Any]) -> RequestParams:
        model = model_param(body)
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise invalid_request("`max_tokens` is required.", param="max_tokens")
        positive_int(body, "max_tokens", MAX_TOKENS)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise invalid_request("`messages` must be a non-empty array.", param="messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                raise invalid_request(
                    f"`messages.{i}.role` must be `user` or `assistant`.",
                    param=f"messages.{i}.role",
                )
            if not isinstance(message.get("content"), str | list):
                raise invalid_request(
                    f"`messages.{i}.content` must be a string or an array of content blocks.",
                    param=f"messages.{i}.content",
                )
            typed_objects(message["content"], f"messages.{i}.content", "content block", ".{}")
        system = body.get("system")
        if system is not None and not isinstance(system, str | list):
            raise invalid_request(
                "`system` must be a string or an array of text blocks.", param="system"
            )
        typed_objects(system, "system", "text block", ".{}")
        number_in_range(body, "temperature", 0, 1)
        number_in_range(body, "top_p", 0, 1)
        if body.get("top_k") is not None and (not is_int(body["top_k"]) or body["top_k"] < 0):
            raise invalid_request("`top_k` must be a non-negative integer.", param="top_k")
        stream = stream_flag(body)
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
            stream=stream,
            include_usage=True,
            max_tokens=max_tokens,
            n=1,
            user=stored_text(user) if isinstance(user, str) else "",
        )

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        messages = [
            {"content": _content_text(m.get("content"))}
            for m in as_list(body.get("messages"))
            if isinstance(m, dict)
        ]
        system = body.get("system")
        if system:
            messages.append({"content": _content_text(system)})
        return count_messages(messages)

    def estimate(self, body: dict[str, Any], answer: dict[str, Any]) -> Units:
        return Units(
            input=self.prompt_tokens(body),
            output=count_text(_content_text(answer.get("content"))),
        )

    def render(self, reply: UpstreamReply, tokens: Units, cost: int) -> dict[str, Any]:
        body = reply.body
        body["usage"] = {
            **(reply.upstream_usage or anthropic_usage(tokens)),
            "cost": pico_to_usd(cost),
        }
        return body

    def accounting(self, body: dict[str, Any]) -> MessagesAccounting:
        return MessagesAccounting(self, body)

    def stream_format(self, params: RequestParams) -> MessagesStreamFormat:
        return MessagesStreamFormat()

    def error_body(self, error: ApiError) -> dict[str, Any]:
        return error_payload(error)

    def headers(self, request_id: str) -> dict[str, str]:
        # Where the Anthropic SDK looks for it (``message._request_id``).
        return {"request-id": request_id}


MESSAGES = Messages()
