"""``POST /v1/chat/completions``: OpenAI chat completions.

Bills prompt tokens (cache reads and writes apart) and completion tokens (reasoning
apart). Answers and the final usage chunk carry the ``usage`` object of
``relay.dialects.usage`` with the cost; a stream's chunks are passed through byte for
byte when unchanged.
"""

from typing import Any

import orjson

from core.money import Units

from .. import sse
from ..errors import ApiError, invalid_request
from ..tokens import count_completion, count_messages, count_text
from .base import Accounting, Dialect, RequestParams, StreamEvent, UpstreamReply
from .checks import (
    MAX_TOKENS,
    model_param,
    number_in_range,
    optional_string,
    positive_int,
    stream_flag,
    stream_usage_asked,
    typed_objects,
)
from .usage import usage_payload

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_N = 128
DONE = sse.encode(sse.DONE)


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


def _messages(body: dict[str, Any]) -> None:
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
        typed_objects(content, f"messages[{i}].content", "content part")
        _tool_calls(message.get("tool_calls"), f"messages[{i}].tool_calls")


def _tools(body: dict[str, Any]) -> None:
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


class ChatAccounting(Accounting):
    """Counts the text handed to the client per choice (each choice on its own)."""

    def __init__(self, dialect: Dialect, body: dict[str, Any]) -> None:
        super().__init__(dialect, body)
        self.text: dict[int, list[str]] = {}
        self.reasoning: dict[int, list[str]] = {}

    def delivered(self, data: dict[str, Any]) -> None:
        choices = data.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or not isinstance(choice.get("delta"), dict):
                continue
            delta = choice["delta"]
            index = choice.get("index")
            if not isinstance(index, int):
                index = 0
            text = self.text.setdefault(index, [])
            if isinstance(delta.get("content"), str):
                text.append(delta["content"])
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str):
                self.reasoning.setdefault(index, []).append(reasoning)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    fn = call["function"]
                    text.append(str(fn.get("name") or "") + str(fn.get("arguments") or ""))

    def output(self) -> Units:
        return Units(
            output=sum(count_text("".join(p)) for p in self.text.values()),
            reasoning=sum(count_text("".join(p)) for p in self.reasoning.values()),
        )


class ChatStreamFormat:
    """Chunks to an OpenAI client. The upstream's usage chunk is held back and
    replaced, at the end, by the billed one if the client asked for usage."""

    content_type = sse.EVENT_STREAM

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.template: dict[str, Any] | None = None
        self.upstream_usage: dict[str, Any] | None = None

    def event(self, event: StreamEvent) -> bytes | None:
        data = event.data
        if self.template is None:
            self.template = data
        if isinstance(data.get("usage"), dict):
            self.upstream_usage = data["usage"]
            if not data.get("choices"):
                self.template = data
                return None
            # Usage riding on a content chunk was read; it moves to the usage chunk.
            data = {**data, "usage": None}
            if not self.include_usage:
                del data["usage"]
            return sse.encode(orjson.dumps(data))
        if event.raw is not None:
            return event.raw
        return sse.encode(orjson.dumps(data))

    def end(self, tokens: Units, cost: int) -> bytes:
        if not self.include_usage:
            return DONE
        template = self.template or {}
        chunk: dict[str, Any] = {
            key: template[key]
            for key in ("id", "object", "created", "model", "system_fingerprint")
            if key in template
        }
        chunk["choices"] = []
        chunk["usage"] = usage_payload(tokens, cost, self.upstream_usage)
        return sse.encode(orjson.dumps(chunk)) + DONE

    def error(self, failure: ApiError) -> bytes:
        return sse.encode(orjson.dumps(failure.payload()))


class Chat(Dialect):
    name = "chat.completions"
    path = "/v1/chat/completions"

    def validate(self, body: dict[str, Any]) -> RequestParams:
        model = model_param(body)
        _messages(body)
        max_tokens = positive_int(body, "max_tokens", MAX_TOKENS)
        max_completion_tokens = positive_int(body, "max_completion_tokens", MAX_TOKENS)
        number_in_range(body, "temperature", 0, 2)
        number_in_range(body, "top_p", 0, 1)
        number_in_range(body, "presence_penalty", -2, 2)
        number_in_range(body, "frequency_penalty", -2, 2)
        n = positive_int(body, "n", MAX_N) or 1
        stream = stream_flag(body)
        include_usage = stream_usage_asked(body, stream)
        _tools(body)
        return RequestParams(
            model=model,
            stream=stream,
            include_usage=include_usage,
            max_tokens=max_completion_tokens or max_tokens,
            n=n,
            user=optional_string(body, "user"),
        )

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        return count_messages(body.get("messages") or [])

    def estimate(self, body: dict[str, Any], answer: dict[str, Any]) -> Units:
        return Units(input=self.prompt_tokens(body), output=count_completion(answer))

    def render(self, reply: UpstreamReply, tokens: Units, cost: int) -> dict[str, Any]:
        reply.body["usage"] = usage_payload(tokens, cost, reply.upstream_usage)
        return reply.body

    def accounting(self, body: dict[str, Any]) -> ChatAccounting:
        return ChatAccounting(self, body)

    def stream_format(self, params: RequestParams) -> ChatStreamFormat:
        return ChatStreamFormat(params.include_usage)


CHAT = Chat()
