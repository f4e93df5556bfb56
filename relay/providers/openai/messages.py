"""The Anthropic Messages API <-> chat completions, for ``/v1/messages`` served by an
OpenAI-compatible channel (or the mock): Messages requests to chat completions, the
answers and stream chunks back to Messages and its events.
"""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from core.money import Units

from ...dialects.base import StreamEvent, UpstreamReply
from ...dialects.messages import anthropic_usage
from ...errors import cannot_send
from ...fields import arguments_object, arguments_text, as_dict, as_int, as_list, as_str
from ...tokens import content_text
from ..base import Call, UpstreamStream

FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# Blocks of an assistant turn that are the Anthropic provider's own (its reasoning,
# its server-side tools): chat completions have no counterpart, and the model on the
# other side never produced them, so they are left out of the history.
_PROVIDER_OWN_BLOCKS = frozenset(
    {
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
        "container_upload",
    }
)


def _document_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = as_dict(block.get("source"))
    title = as_str(block.get("title"))
    kind = source.get("type")
    if kind == "base64" and source.get("media_type") == "application/pdf":
        return {
            "type": "file",
            "file": {
                "filename": title or "document.pdf",
                "file_data": f"data:application/pdf;base64,{as_str(source.get('data'))}",
            },
        }
    if kind == "text":
        text = as_str(source.get("data"))
    elif kind == "content":
        text = content_text(source.get("content"))
    else:
        raise cannot_send(f"A `document` with a `{kind}` source", f"{where}.source.type")
    return {"type": "text", "text": f"{title}\n\n{text}" if title else text}


def _chat_parts(content: Any, where: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """User content blocks -> (chat content parts, tool messages)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}], []
    parts: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    for i, block in enumerate(as_list(content)):
        if not isinstance(block, dict):
            continue
        kind = as_str(block.get("type"))
        here = f"{where}.{i}"
        if kind == "text":
            parts.append({"type": "text", "text": as_str(block.get("text"))})
        elif kind == "image":
            source = as_dict(block.get("source"))
            if source.get("type") == "base64":
                media_type = as_str(source.get("media_type")) or "image/png"
                url = f"data:{media_type};base64,{as_str(source.get('data'))}"
            elif source.get("type") == "url":
                url = as_str(source.get("url"))
            else:
                raise cannot_send(
                    f"An `image` with a `{source.get('type')}` source", f"{here}.source.type"
                )
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "document":
            parts.append(_document_part(block, here))
        elif kind == "search_result":
            lines = [as_str(block.get("title")), as_str(block.get("source"))]
            lines.append(content_text(block.get("content")))
            parts.append({"type": "text", "text": "\n".join(line for line in lines if line)})
        elif kind == "tool_result":
            inner = block.get("content")
            text = inner if isinstance(inner, str) else content_text(inner)
            if block.get("is_error") is True:
                text = f"Error: {text}"
            tools.append(
                {"role": "tool", "tool_call_id": as_str(block.get("tool_use_id")), "content": text}
            )
        elif kind not in _PROVIDER_OWN_BLOCKS:
            raise cannot_send(f"A content block of type `{kind}`", f"{here}.type")
    return parts, tools


def _chat_tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        tool = as_dict(tool)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise cannot_send(
                f"The tool `{as_str(tool.get('name'))}` ({kind}) runs on Anthropic's servers and",
                f"tools.{i}.type",
            )
        out.append(
            {
                "type": "function",
                "function": {
                    "name": as_str(tool.get("name")),
                    "description": as_str(tool.get("description")),
                    "parameters": as_dict(tool.get("input_schema"))
                    or {"type": "object", "properties": {}},
                },
            }
        )
    return out


def messages_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        text = system if isinstance(system, str) else content_text(system)
        messages.append({"role": "system", "content": text})
    for i, message in enumerate(as_list(body.get("messages"))):
        message = as_dict(message)
        role, content = message.get("role"), message.get("content")
        if role == "assistant":
            blocks = (
                [{"type": "text", "text": content}]
                if isinstance(content, str)
                else [b for b in as_list(content) if isinstance(b, dict)]
            )
            text = "".join(as_str(b.get("text")) for b in blocks if b.get("type") == "text")
            calls = [
                {
                    "id": as_str(b.get("id")),
                    "type": "function",
                    "function": {
                        "name": as_str(b.get("name")),
                        "arguments": arguments_text(b.get("input")),
                    },
                }
                for b in blocks
                if b.get("type") == "tool_use"
            ]
            reply: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                reply["tool_calls"] = calls
            messages.append(reply)
        else:
            parts, tool_messages = _chat_parts(content, f"messages.{i}.content")
            messages.extend(tool_messages)
            if parts:
                only_text = all(p["type"] == "text" for p in parts)
                messages.append(
                    {
                        "role": "user",
                        "content": "".join(p["text"] for p in parts) if only_text else parts,
                    }
                )
    out: dict[str, Any] = {
        "model": body.get("model"),
        "messages": messages,
        "max_tokens": body.get("max_tokens"),
    }
    for name in ("temperature", "top_p", "stream"):
        if body.get(name) is not None:
            out[name] = body[name]
    stops = [s for s in as_list(body.get("stop_sequences")) if isinstance(s, str)]
    if stops:
        out["stop"] = stops
    tools = _chat_tools(as_list(body.get("tools")))
    if tools:
        out["tools"] = tools
    choice = as_dict(body.get("tool_choice"))
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": as_str(choice.get("name"))}}
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    user_id = as_dict(body.get("metadata")).get("user_id")
    if isinstance(user_id, str):
        out["user"] = user_id
    if "mock" in body:
        out["mock"] = body["mock"]
    return out


def chat_to_message(completion: dict[str, Any], model: str, tokens: Units) -> dict[str, Any]:
    choices = as_list(completion.get("choices"))
    choice = as_dict(choices[0]) if choices else {}
    reply = as_dict(choice.get("message"))
    content: list[dict[str, Any]] = []
    text = content_text(reply.get("content")) or as_str(reply.get("refusal"))
    if text:
        content.append({"type": "text", "text": text})
    for call in as_list(reply.get("tool_calls")):
        call = as_dict(call)
        fn = as_dict(call.get("function"))
        content.append(
            {
                "type": "tool_use",
                "id": as_str(call.get("id")) or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": as_str(fn.get("name")),
                "input": arguments_object(fn.get("arguments")),
            }
        )
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        # The model asked for, not the upstream's name for it.
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(as_str(choice.get("finish_reason")), content),
        "stop_sequence": None,
        "usage": anthropic_usage(tokens),
    }


def _stop_reason(finish_reason: str, content: list[dict[str, Any]]) -> str:
    # A call the request forced with tool_choice ends with "stop" at OpenAI; the
    # Messages client expects the turn to end for the tool it asked for.
    stop = FINISH_TO_STOP.get(finish_reason or "stop", "end_turn")
    if stop == "end_turn" and any(block["type"] == "tool_use" for block in content):
        return "tool_use"
    return stop


class ChatToMessages:
    """``chat.completion.chunk`` dicts in, Anthropic stream events out (as bytes)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.block: int | None = None
        self.block_kind: str | None = None
        self.next_block = 0
        self.tool_blocks: dict[int, int] = {}
        self.stop_reason = "end_turn"

    def _open(self, kind: str, content_block: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close()
        self.block, self.block_kind = self.next_block, kind
        self.next_block += 1
        events.append(
            {"type": "content_block_start", "index": self.block, "content_block": content_block}
        )
        return events

    def _close(self) -> list[dict[str, Any]]:
        if self.block is None:
            return []
        index, self.block, self.block_kind = self.block, None, None
        return [{"type": "content_block_stop", "index": index}]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if not self.started:
            self.started = True
            events.append(
                {
                    "type": "message_start",
                    "message": {
                        "id": f"msg_{uuid.uuid4().hex[:24]}",
                        "type": "message",
                        "role": "assistant",
                        "model": self.model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": 0, "output_tokens": 0},
                    },
                }
            )
        for choice in as_list(chunk.get("choices")):
            choice = as_dict(choice)
            if as_int(choice.get("index")) != 0:
                continue
            delta = as_dict(choice.get("delta"))
            text = as_str(delta.get("content"))
            if text:
                if self.block_kind != "text":
                    events += self._open("text", {"type": "text", "text": ""})
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": self.block,
                        "delta": {"type": "text_delta", "text": text},
                    }
                )
            for call in as_list(delta.get("tool_calls")):
                call = as_dict(call)
                tool_index = as_int(call.get("index"))
                fn = as_dict(call.get("function"))
                if tool_index not in self.tool_blocks:
                    events += self._open(
                        "tool_use",
                        {
                            "type": "tool_use",
                            "id": as_str(call.get("id")) or f"toolu_{uuid.uuid4().hex[:24]}",
                            "name": as_str(fn.get("name")),
                            "input": {},
                        },
                    )
                    self.tool_blocks[tool_index] = self.block or 0
                arguments = as_str(fn.get("arguments"))
                if arguments:
                    events.append(
                        {
                            "type": "content_block_delta",
                            "index": self.tool_blocks[tool_index],
                            "delta": {"type": "input_json_delta", "partial_json": arguments},
                        }
                    )
            finish = as_str(choice.get("finish_reason"))
            if finish:
                self.stop_reason = FINISH_TO_STOP.get(finish, "end_turn")
        return events

    def finish(self, tokens: Units | None) -> list[dict[str, Any]]:
        """The closing events; the delta carries the usage if the upstream reported it."""
        if self.tool_blocks and self.stop_reason == "end_turn":
            self.stop_reason = "tool_use"  # see _stop_reason
        events = self._close()
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
        }
        if tokens is not None:
            delta["usage"] = anthropic_usage(tokens)
        events.append(delta)
        events.append({"type": "message_stop"})
        return events


# -- the calls -----------------------------------------------------------------------------


async def answer(
    call: Call, chat: Callable[[dict[str, Any]], Awaitable[UpstreamReply]]
) -> UpstreamReply:
    """A Messages request answered by ``chat`` (a chat-completions call)."""
    reply = await chat(messages_to_chat(call.body))
    tokens = reply.tokens
    return UpstreamReply(
        body=chat_to_message(reply.body, call.model, tokens or Units()),
        upstream_usage=anthropic_usage(tokens) if tokens is not None else None,
        tokens=tokens,
    )


class MessagesFromChat:
    """A chat-completions stream seen as Messages events."""

    def __init__(self, chunks: UpstreamStream, model: str) -> None:
        self._chunks = chunks
        self._model = model

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        translator = ChatToMessages(self._model)
        usage: Units | None = None
        async for chunk in self._chunks:
            if chunk.usage is not None:
                usage = chunk.usage
            for event in translator.feed(chunk.data):
                yield StreamEvent(data=event)
        for event in translator.finish(usage):
            final = event["type"] == "message_delta" and usage is not None
            yield StreamEvent(data=event, usage=usage if final else None, usage_final=final)

    async def aclose(self) -> None:
        await self._chunks.aclose()
