"""Anthropic Messages API: translation to and from OpenAI chat completions.

Chat completions sent to an Anthropic channel are translated to Messages requests,
and the answers (streamed or not) back to chat completions. Inbound
``/v1/messages`` requests served by an OpenAI-compatible or mock channel go the
other way. Usage is mapped so that each token lands in one kind: Anthropic's
``input_tokens`` excludes cache reads and writes, OpenAI's ``prompt_tokens``
includes them.
"""

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from django.conf import settings

from core.money import TokenCounts

from . import client, sse
from .adapters import (
    Forwarded,
    StreamEvent,
    UpstreamFailure,
    UpstreamReply,
    UpstreamStreamError,
    forwarded_for,
    read_json,
    send,
)
from .errors import ApiError, invalid_request
from .normalize import tokens_from_anthropic
from .selectors import ChannelInfo
from .tokens import content_text

ANTHROPIC_VERSION = "2023-06-01"

STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# -- reading untrusted JSON --------------------------------------------------------
# Requests are checked only as far as the gateway must understand them, and answers
# come from upstreams: every field read here may hold any JSON value. These read a
# field as the type it should have, or as empty.


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _loads_args(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def _data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a ``data:`` URL."""
    if not url.startswith("data:"):
        return None
    header, _, data = url.partition(",")
    return header[5:].split(";")[0], data


def _cannot_send(what: str, param: str) -> ApiError:
    return invalid_request(f"{what} cannot be sent to this model's provider.", param=param)


# -- chat completions -> Messages ---------------------------------------------------


def _image_block(url: str) -> dict[str, Any]:
    inline = _data_url(url)
    if inline is not None:
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": inline[0] or "image/png", "data": inline[1]},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """A chat message's content as Messages content blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for i, part in enumerate(_list(content)):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = _str(part.get("text")) or _str(part.get("refusal"))
            block: dict[str, Any] = {"type": "text", "text": text}
        elif kind == "image_url":
            image = part.get("image_url")
            block = _image_block(_str(_dict(image).get("url")) or _str(image))
        elif kind == "file":
            inline = _data_url(_str(_dict(part.get("file")).get("file_data")))
            if inline is None or inline[0] != "application/pdf":
                raise _cannot_send("A `file` part other than an inline PDF", f"{where}[{i}]")
            block = {
                "type": "document",
                "source": {"type": "base64", "media_type": inline[0], "data": inline[1]},
            }
        else:
            raise _cannot_send(f"A content part of type `{kind}`", f"{where}[{i}].type")
        if isinstance(part.get("cache_control"), dict):
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Anthropic wants user and assistant turns to alternate: merge neighbours."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": list(blocks)})


def _tool_choice(body: dict[str, Any], has_tools: bool) -> dict[str, Any] | None:
    choice = body.get("tool_choice")
    tool_choice: dict[str, Any] | None = None
    if choice == "auto":
        tool_choice = {"type": "auto"}
    elif choice == "required":
        tool_choice = {"type": "any"}
    elif choice == "none":
        tool_choice = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        tool_choice = {"type": "tool", "name": _str(choice["function"].get("name"))}
    if body.get("parallel_tool_calls") is False and has_tools:
        tool_choice = {**(tool_choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    return tool_choice


def chat_to_anthropic(body: dict[str, Any], model: str) -> dict[str, Any]:
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(_list(body.get("messages"))):
        message = _dict(message)
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = content_text(content)
            if text:
                system.append(text)
        elif role in ("tool", "function"):
            result = {
                "type": "tool_result",
                "tool_use_id": _str(message.get("tool_call_id")) or _str(message.get("name")),
                "content": content_text(content),
            }
            _append(messages, "user", [result])
        elif role == "assistant":
            blocks = _blocks(content, f"messages[{i}].content")
            if _str(message.get("refusal")):
                blocks.append({"type": "text", "text": message["refusal"]})
            calls = _list(message.get("tool_calls"))
            legacy = _dict(message.get("function_call"))
            if legacy:
                # The legacy function call has no id; its answer names the function.
                calls = [*calls, {"id": _str(legacy.get("name")), "function": legacy}]
            for call in calls:
                call = _dict(call)
                fn = _dict(call.get("function"))
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": _str(call.get("id")) or f"toolu_{uuid.uuid4().hex[:24]}",
                        "name": _str(fn.get("name")),
                        "input": _loads_args(fn.get("arguments")),
                    }
                )
            _append(messages, "assistant", blocks)
        else:
            _append(messages, "user", _blocks(content, f"messages[{i}].content"))

    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens")
        or body.get("max_tokens")
        or settings.TOLLGATE["DEFAULT_COMPLETION_RESERVE"],
    }
    if system:
        out["system"] = "\n\n".join(system)
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else [s for s in _list(stop) if isinstance(s, str)]
    if stops:
        out["stop_sequences"] = stops
    if body.get("stream"):
        out["stream"] = True
    tools = [_dict(t.get("function")) for t in _list(body.get("tools")) if isinstance(t, dict)]
    tools = [fn for fn in tools if fn]
    if tools:
        out["tools"] = [
            {
                "name": _str(fn.get("name")),
                "description": _str(fn.get("description")),
                "input_schema": _dict(fn.get("parameters")) or {"type": "object", "properties": {}},
            }
            for fn in tools
        ]
    tool_choice = _tool_choice(body, bool(tools))
    if tool_choice is not None:
        out["tool_choice"] = tool_choice
    if _str(body.get("user")):
        out["metadata"] = {"user_id": body["user"]}
    for native in ("top_k", "thinking", "service_tier"):
        if native in body:
            out[native] = body[native]
    return out


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    t = tokens_from_anthropic(usage)
    return {
        "prompt_tokens": t.prompt,
        "completion_tokens": t.completion,
        "total_tokens": t.total,
        "prompt_tokens_details": {
            "cached_tokens": t.cache_read,
            "cache_write_tokens": t.cache_write,
        },
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _arguments(value: Any) -> str:
    return orjson.dumps(value if value is not None else {}).decode()


def anthropic_to_chat(message: dict[str, Any]) -> dict[str, Any]:
    text, reasoning, calls = [], [], []
    for block in _list(message.get("content")):
        block = _dict(block)
        kind = block.get("type")
        if kind == "text":
            text.append(_str(block.get("text")))
        elif kind == "thinking":
            reasoning.append(_str(block.get("thinking")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": _str(block.get("id")),
                    "type": "function",
                    "function": {
                        "name": _str(block.get("name")),
                        "arguments": _arguments(block.get("input")),
                    },
                }
            )
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    if calls:
        reply["tool_calls"] = calls
    result: dict[str, Any] = {
        "id": _str(message.get("id")) or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": _str(message.get("model")),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": STOP_TO_FINISH.get(_str(message.get("stop_reason")), "stop"),
            }
        ],
    }
    if isinstance(message.get("usage"), dict):
        result["usage"] = openai_usage(message["usage"])
    return result


class AnthropicToChat:
    """Anthropic stream events in, ``chat.completion.chunk`` dicts out."""

    def __init__(self) -> None:
        self.base: dict[str, Any] = {}
        self.usage: dict[str, Any] = {}
        self.tool_index: dict[int, int] = {}
        self.finish: str | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self.base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def feed(self, event: dict[str, Any]) -> Iterator[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = _dict(event.get("message"))
            self.base = {
                "id": _str(message.get("id")) or f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": _str(message.get("model")),
            }
            self.usage.update(_dict(message.get("usage")))
            yield self._chunk({"role": "assistant", "content": ""})
        elif kind == "content_block_start":
            block = _dict(event.get("content_block"))
            if block.get("type") == "tool_use":
                index = self.tool_index[_int(event.get("index"))] = len(self.tool_index)
                yield self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": _str(block.get("id")),
                                "type": "function",
                                "function": {"name": _str(block.get("name")), "arguments": ""},
                            }
                        ]
                    }
                )
        elif kind == "content_block_delta":
            delta = _dict(event.get("delta"))
            dtype = delta.get("type")
            if dtype == "text_delta":
                yield self._chunk({"content": _str(delta.get("text"))})
            elif dtype == "thinking_delta":
                yield self._chunk({"reasoning_content": _str(delta.get("thinking"))})
            elif dtype == "input_json_delta":
                index = self.tool_index.get(_int(event.get("index")), 0)
                yield self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "function": {"arguments": _str(delta.get("partial_json"))},
                            }
                        ]
                    }
                )
        elif kind == "message_delta":
            # Anthropic's stream usage is cumulative: the newest values win.
            self.usage.update({k: v for k, v in _dict(event.get("usage")).items() if v is not None})
            stop = _str(_dict(event.get("delta")).get("stop_reason"))
            if stop and self.finish is None:
                self.finish = STOP_TO_FINISH.get(stop, "stop")
                yield self._chunk({}, self.finish)
        elif kind == "message_stop":
            yield {**self.base, "choices": [], "usage": openai_usage(self.usage)}
        elif kind == "error":
            error = _dict(event.get("error"))
            raise UpstreamStreamError(
                "The upstream provider reported an error mid-stream "
                f"({_str(error.get('type')) or 'error'})."
            )


# -- Messages -> chat completions (for /v1/messages on other channels) -----------------

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
    source = _dict(block.get("source"))
    title = _str(block.get("title"))
    kind = source.get("type")
    if kind == "base64" and source.get("media_type") == "application/pdf":
        return {
            "type": "file",
            "file": {
                "filename": title or "document.pdf",
                "file_data": f"data:application/pdf;base64,{_str(source.get('data'))}",
            },
        }
    if kind == "text":
        text = _str(source.get("data"))
    elif kind == "content":
        text = content_text(source.get("content"))
    else:
        raise _cannot_send(f"A `document` with a `{kind}` source", f"{where}.source.type")
    return {"type": "text", "text": f"{title}\n\n{text}" if title else text}


def _chat_parts(content: Any, where: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """User content blocks -> (chat content parts, tool messages)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}], []
    parts: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    for i, block in enumerate(_list(content)):
        if not isinstance(block, dict):
            continue
        kind = _str(block.get("type"))
        here = f"{where}.{i}"
        if kind == "text":
            parts.append({"type": "text", "text": _str(block.get("text"))})
        elif kind == "image":
            source = _dict(block.get("source"))
            if source.get("type") == "base64":
                media_type = _str(source.get("media_type")) or "image/png"
                url = f"data:{media_type};base64,{_str(source.get('data'))}"
            elif source.get("type") == "url":
                url = _str(source.get("url"))
            else:
                raise _cannot_send(
                    f"An `image` with a `{source.get('type')}` source", f"{here}.source.type"
                )
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "document":
            parts.append(_document_part(block, here))
        elif kind == "search_result":
            lines = [_str(block.get("title")), _str(block.get("source"))]
            lines.append(content_text(block.get("content")))
            parts.append({"type": "text", "text": "\n".join(line for line in lines if line)})
        elif kind == "tool_result":
            inner = block.get("content")
            text = inner if isinstance(inner, str) else content_text(inner)
            if block.get("is_error") is True:
                text = f"Error: {text}"
            tools.append(
                {"role": "tool", "tool_call_id": _str(block.get("tool_use_id")), "content": text}
            )
        elif kind not in _PROVIDER_OWN_BLOCKS:
            raise _cannot_send(f"A content block of type `{kind}`", f"{here}.type")
    return parts, tools


def _chat_tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        tool = _dict(tool)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise _cannot_send(
                f"The tool `{_str(tool.get('name'))}` ({kind}) runs on Anthropic's servers and",
                f"tools.{i}.type",
            )
        out.append(
            {
                "type": "function",
                "function": {
                    "name": _str(tool.get("name")),
                    "description": _str(tool.get("description")),
                    "parameters": _dict(tool.get("input_schema"))
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
    for i, message in enumerate(_list(body.get("messages"))):
        message = _dict(message)
        role, content = message.get("role"), message.get("content")
        if role == "assistant":
            blocks = (
                [{"type": "text", "text": content}]
                if isinstance(content, str)
                else [b for b in _list(content) if isinstance(b, dict)]
            )
            text = "".join(_str(b.get("text")) for b in blocks if b.get("type") == "text")
            calls = [
                {
                    "id": _str(b.get("id")),
                    "type": "function",
                    "function": {
                        "name": _str(b.get("name")),
                        "arguments": _arguments(b.get("input")),
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
    stops = [s for s in _list(body.get("stop_sequences")) if isinstance(s, str)]
    if stops:
        out["stop"] = stops
    tools = _chat_tools(_list(body.get("tools")))
    if tools:
        out["tools"] = tools
    choice = _dict(body.get("tool_choice"))
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": _str(choice.get("name"))}}
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    user_id = _dict(body.get("metadata")).get("user_id")
    if isinstance(user_id, str):
        out["user"] = user_id
    if "mock" in body:
        out["mock"] = body["mock"]
    return out


def anthropic_usage(tokens: TokenCounts) -> dict[str, Any]:
    return {
        "input_tokens": tokens.input,
        "cache_creation_input_tokens": tokens.cache_write,
        "cache_read_input_tokens": tokens.cache_read,
        "output_tokens": tokens.completion,
    }


def chat_to_message(completion: dict[str, Any], model: str, tokens: TokenCounts) -> dict[str, Any]:
    choices = _list(completion.get("choices"))
    choice = _dict(choices[0]) if choices else {}
    reply = _dict(choice.get("message"))
    content: list[dict[str, Any]] = []
    text = content_text(reply.get("content")) or _str(reply.get("refusal"))
    if text:
        content.append({"type": "text", "text": text})
    for call in _list(reply.get("tool_calls")):
        call = _dict(call)
        fn = _dict(call.get("function"))
        content.append(
            {
                "type": "tool_use",
                "id": _str(call.get("id")) or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": _str(fn.get("name")),
                "input": _loads_args(fn.get("arguments")),
            }
        )
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        # The model asked for, not the upstream's name for it.
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(_str(choice.get("finish_reason")), content),
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


def event_bytes(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


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

    def feed(self, chunk: dict[str, Any]) -> bytes:
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
        for choice in _list(chunk.get("choices")):
            choice = _dict(choice)
            if _int(choice.get("index")) != 0:
                continue
            delta = _dict(choice.get("delta"))
            text = _str(delta.get("content"))
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
            for call in _list(delta.get("tool_calls")):
                call = _dict(call)
                tool_index = _int(call.get("index"))
                fn = _dict(call.get("function"))
                if tool_index not in self.tool_blocks:
                    events += self._open(
                        "tool_use",
                        {
                            "type": "tool_use",
                            "id": _str(call.get("id")) or f"toolu_{uuid.uuid4().hex[:24]}",
                            "name": _str(fn.get("name")),
                            "input": {},
                        },
                    )
                    self.tool_blocks[tool_index] = self.block or 0
                arguments = _str(fn.get("arguments"))
                if arguments:
                    events.append(
                        {
                            "type": "content_block_delta",
                            "index": self.tool_blocks[tool_index],
                            "delta": {"type": "input_json_delta", "partial_json": arguments},
                        }
                    )
            finish = _str(choice.get("finish_reason"))
            if finish:
                self.stop_reason = FINISH_TO_STOP.get(finish, "end_turn")
        return b"".join(event_bytes(e) for e in events)

    def finish(self, tokens: TokenCounts, cost: str) -> bytes:
        if self.tool_blocks and self.stop_reason == "end_turn":
            self.stop_reason = "tool_use"  # see _stop_reason
        events = self._close()
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                "usage": {**anthropic_usage(tokens), "cost": cost},
            }
        )
        events.append({"type": "message_stop"})
        return b"".join(event_bytes(e) for e in events)


# -- the channel adapter -----------------------------------------------------------------


def _headers(channel: ChannelInfo, forwarded: Forwarded) -> dict[str, str]:
    # The caller's anthropic-beta (and anthropic-version, if it sent one) go along.
    return {
        "anthropic-version": ANTHROPIC_VERSION,
        **forwarded_for(forwarded, "anthropic-"),
        "x-api-key": channel.api_key,
        "content-type": "application/json",
    }


class AnthropicAdapter:
    """A channel speaking the Anthropic Messages API (``{base_url}/v1/messages``)."""

    async def _send(
        self, channel: ChannelInfo, body: dict[str, Any], forwarded: Forwarded
    ) -> client.UpstreamResponse:
        try:
            return await send(
                channel, f"{channel.base_url}/v1/messages", body, _headers(channel, forwarded)
            )
        except UpstreamFailure as exc:
            # Anthropic's "overloaded" status.
            if exc.upstream_status == 529:
                raise UpstreamFailure(
                    503,
                    "The upstream provider is overloaded.",
                    code="upstream_failed",
                    upstream_status=529,
                ) from None
            raise

    async def messages_complete(
        self, channel: ChannelInfo, body: dict[str, Any], forwarded: Forwarded = None
    ) -> UpstreamReply:
        data = await read_json(await self._send(channel, body, forwarded))
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        return UpstreamReply(
            body=data, upstream_usage=usage, tokens=tokens_from_anthropic(usage) if usage else None
        )

    async def messages_stream(
        self, channel: ChannelInfo, body: dict[str, Any], forwarded: Forwarded = None
    ) -> "AnthropicEvents":
        return AnthropicEvents(await self._send(channel, {**body, "stream": True}, forwarded))

    async def complete(
        self, channel: ChannelInfo, body: dict[str, Any], forwarded: Forwarded = None
    ) -> UpstreamReply:
        reply = await self.messages_complete(channel, _translated(body), forwarded)
        chat = anthropic_to_chat(reply.body)
        return UpstreamReply(body=chat, upstream_usage=chat.get("usage"), tokens=reply.tokens)

    async def open_stream(
        self, channel: ChannelInfo, body: dict[str, Any], forwarded: Forwarded = None
    ) -> "TranslatedStream":
        events = await self.messages_stream(channel, _translated(body), forwarded)
        return TranslatedStream(events)


def _translated(body: dict[str, Any]) -> dict[str, Any]:
    # Content Anthropic cannot take is the caller's to fix: the ApiError is answered
    # as a 400 before anything reaches the upstream, and nothing is charged.
    return chat_to_anthropic(body, body["model"])


class AnthropicEvents:
    """Native Anthropic stream events (``StreamEvent.raw`` keeps the exact bytes)."""

    def __init__(self, response: client.UpstreamResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        decoder = sse.SSEDecoder()
        stopped = False
        try:
            async for chunk in self._response.chunks():
                for raw in decoder.feed(chunk):
                    data = sse.event_data(raw)
                    if data is None:
                        continue
                    try:
                        event = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise UpstreamStreamError(
                            "The upstream provider sent a malformed event."
                        ) from None
                    if not isinstance(event, dict):
                        continue
                    if event.get("type") == "error":
                        raise UpstreamStreamError(
                            "The upstream provider reported an error mid-stream."
                        )
                    if event.get("type") == "message_stop":
                        stopped = True
                    yield StreamEvent(data=event, raw=raw + b"\n\n")
        except client.TransportTimeout:
            raise UpstreamStreamError(
                "The upstream provider stopped sending.", "upstream_timeout"
            ) from None
        except client.TransportError:
            raise UpstreamStreamError("The upstream provider's stream broke off.") from None
        if not stopped:
            raise UpstreamStreamError("The upstream provider's stream ended early.")

    async def aclose(self) -> None:
        self._response.close()


class TranslatedStream:
    """An Anthropic stream seen as chat-completion chunks."""

    def __init__(self, events: AnthropicEvents) -> None:
        self._events = events

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        translator = AnthropicToChat()
        async for event in self._events:
            for chunk in translator.feed(event.data):
                yield StreamEvent(data=chunk)

    async def aclose(self) -> None:
        await self._events.aclose()
