"""OpenAI's Responses API on Anthropic channels: the request translated to Messages
through chat completions (``providers.openai.responses``, then ``chat``), the answer
and the events back the same way.

Three settings have no direct counterpart:

- Structured output. A ``json_schema`` format becomes a tool with that schema as
  its input that the model is made to call; the call's input is answered as the
  response's text. It cannot be combined with the request's own tools, and it
  turns extended thinking off (Anthropic refuses thinking with a forced tool).
  ``json_object`` asks for one JSON object in the system prompt.
- A ``web_search`` tool becomes Anthropic's web search server tool (its allowed
  domains and approximate location kept); each search Anthropic runs comes back as
  a ``web_search_call`` item, and is billed per call as Anthropic counts it.
- ``reasoning.effort`` turns on extended thinking, with a budget by effort (low
  1,024 tokens, medium 4,096, high 16,384, xhigh 32,768) of at most half the output
  limit, and none below Anthropic's minimum of 1,024; temperature and top_p are
  then left to Anthropic's defaults, as it requires. The thinking comes back as the
  response's reasoning summary, and the signed blocks in the reasoning item's
  ``encrypted_content``: a later turn that sends the item back (or names the
  response by ``previous_response_id``) gives Anthropic its thinking back, which it
  requires before a tool call's answer. A turn that answers a tool call whose
  thinking did not come back is sent with thinking off (Anthropic's way out), and
  with thinking off no thinking is sent back.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ...dialects.base import StreamEvent, UpstreamReply
from ...errors import cannot_send
from ...fields import as_dict, as_list, as_str
from ..base import Call, UpstreamStream
from ..openai.responses import ResponsesFromChat, reply_from_chat, responses_to_chat
from .chat import anthropic_to_chat, chat_to_anthropic

# The Responses API's web search tools, and Anthropic's.
WEB_SEARCH_TYPES = ("web_search", "web_search_preview", "web_search_2025_08_26")
WEB_SEARCH_TOOL = "web_search_20250305"
_LOCATION = ("city", "region", "country", "timezone")
THINKING_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768}
MIN_THINKING = 1024
JSON_OBJECT = "Reply with a single JSON object and nothing else."
# Settings of the chat request that mean something else to Anthropic, or nothing.
_NOT_FOR_ANTHROPIC = ("service_tier", "response_format", "reasoning_effort", "logprobs")


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """The Messages request, and the tool standing in for a ``json_schema`` format."""

    body: dict[str, Any]
    schema_tool: str | None = None


def _web_search(tool: dict[str, Any]) -> dict[str, Any]:
    """A ``web_search`` tool as Anthropic's web search server tool."""
    out: dict[str, Any] = {"type": WEB_SEARCH_TOOL, "name": "web_search"}
    domains = as_list(as_dict(tool.get("filters")).get("allowed_domains"))
    if domains:
        out["allowed_domains"] = [d for d in domains if isinstance(d, str)]
    location = as_dict(tool.get("user_location"))
    place = {k: location[k] for k in _LOCATION if isinstance(location.get(k), str)}
    if place:
        out["user_location"] = {"type": "approximate", **place}
    return out


def responses_to_anthropic(body: dict[str, Any]) -> MessagesRequest:
    """A Responses request as a Messages request; raises ApiError (400) for what
    cannot be sent."""
    tools = [as_dict(t) for t in as_list(body.get("tools"))]
    searches = [_web_search(t) for t in tools if t.get("type") in WEB_SEARCH_TYPES]
    if searches:
        if as_dict(body.get("tool_choice")).get("type") in WEB_SEARCH_TYPES:
            raise cannot_send("A `tool_choice` forcing the web search", "tool_choice")
        body = {**body, "tools": [t for t in tools if t.get("type") not in WEB_SEARCH_TYPES]}
    chat = responses_to_chat(body, keep_thinking=True)
    for name in _NOT_FOR_ANTHROPIC:
        chat.pop(name, None)
    out = chat_to_anthropic(chat, body["model"])
    if searches:
        out["tools"] = [*out.get("tools", ()), searches[0]]
    fmt = as_dict(as_dict(body.get("text")).get("format"))
    schema_tool = None
    if fmt.get("type") == "json_schema":
        if out.get("tools"):
            raise cannot_send("A `json_schema` text format together with tools", "text.format")
        schema_tool = as_str(fmt.get("name")) or "json_response"
        out["tools"] = [
            {
                "name": schema_tool,
                "description": as_str(fmt.get("description")) or "Answer with this JSON.",
                "input_schema": as_dict(fmt.get("schema")),
            }
        ]
        out["tool_choice"] = {"type": "tool", "name": schema_tool}
    elif fmt.get("type") == "json_object":
        out["system"] = "\n\n".join(s for s in (as_str(out.get("system")), JSON_OBJECT) if s)
    effort = as_str(as_dict(body.get("reasoning")).get("effort"))
    budget = min(THINKING_BUDGETS.get(effort, 0), out["max_tokens"] // 2)
    if schema_tool is None and budget >= MIN_THINKING and _thinking_came_back(out["messages"]):
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
        out.pop("temperature", None)
        out.pop("top_p", None)
    else:
        out["messages"] = _without_thinking(out["messages"])
    return MessagesRequest(body=out, schema_tool=schema_tool)


_THINKING = ("thinking", "redacted_thinking")


def _without_thinking(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with no thinking blocks, turns left empty dropped and their
    neighbours merged, as Anthropic wants turns to alternate."""
    kept: list[dict[str, Any]] = []
    for message in messages:
        blocks = [b for b in message["content"] if b["type"] not in _THINKING]
        if not blocks:
            continue
        if kept and kept[-1]["role"] == message["role"]:
            kept[-1]["content"] += blocks
        else:
            kept.append({**message, "content": blocks})
    return kept


def _thinking_came_back(messages: list[dict[str, Any]]) -> bool:
    """Whether the last assistant turn, when it called tools, begins with its thinking:
    with thinking on, Anthropic refuses such a turn without it."""
    for message in reversed(messages):
        if message["role"] == "assistant":
            blocks = message["content"]
            if not any(b["type"] == "tool_use" for b in blocks):
                return True
            return blocks[0]["type"] in _THINKING
    return True


def _schema_as_text(chunk: dict[str, Any]) -> dict[str, Any]:
    """A chat completion or chunk whose call of the schema tool is its text."""
    choices = []
    for choice in as_list(chunk.get("choices")):
        choice = dict(as_dict(choice))
        for key in ("message", "delta"):
            if key not in choice:
                continue
            message = dict(as_dict(choice[key]))
            calls = message.pop("tool_calls", None)
            text = "".join(
                as_str(as_dict(as_dict(call).get("function")).get("arguments"))
                for call in as_list(calls)
            )
            if text:
                message["content"] = as_str(message.get("content")) + text
            choice[key] = message
        if choice.get("finish_reason") == "tool_calls":
            choice["finish_reason"] = "stop"
        choices.append(choice)
    return {**chunk, "choices": choices}


async def answer(
    call: Call,
    request: MessagesRequest,
    message: Callable[[dict[str, Any]], Awaitable[UpstreamReply]],
) -> UpstreamReply:
    """The response to ``request``, sent by ``message`` (a Messages call)."""
    reply = await message(request.body)
    chat = anthropic_to_chat(reply.body)
    if request.schema_tool is not None:
        chat = _schema_as_text(chat)
    translated = UpstreamReply(body=chat, upstream_usage=None, tokens=reply.tokens)
    return reply_from_chat(translated, call.body, call.model)


class _SchemaAsText:
    """Chunks whose call of the schema tool streams as text."""

    def __init__(self, chunks: UpstreamStream) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        async for event in self._chunks:
            yield StreamEvent(
                data=_schema_as_text(event.data), usage=event.usage, usage_final=event.usage_final
            )

    async def aclose(self) -> None:
        await self._chunks.aclose()


def stream(call: Call, request: MessagesRequest, chunks: UpstreamStream) -> UpstreamStream:
    """The Messages stream, already seen as chat chunks, as Responses API events."""
    if request.schema_tool is not None:
        chunks = _SchemaAsText(chunks)
    return ResponsesFromChat(chunks, call.body, call.model)
