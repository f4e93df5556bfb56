"""Chat completions <-> the Anthropic Messages API, for chat completions served by an
Anthropic channel: requests to Messages requests, answers and stream events back to
chat completions. Usage is mapped so that each token lands in one kind: Anthropic's
``input_tokens`` excludes cache reads and writes, OpenAI's ``prompt_tokens``
includes them.

Extended thinking comes back as ``reasoning_content`` (its text) and
``thinking_blocks`` (the blocks as Anthropic sent them, with their signatures; in a
stream, each block whole once its signature arrives). An assistant message sent with
``thinking_blocks`` gives them back to Anthropic ahead of its text and tool calls, as
it requires for a tool call's answer when thinking is on. The web searches Anthropic
ran (its ``web_search`` server tool, which only a Responses request asks for) come
back as ``web_search_calls`` (in a stream, ``web_search_call`` once its results are
in), for the Responses API's ``web_search_call`` items.
"""

import time
import uuid
from collections.abc import Iterator
from typing import Any

from django.conf import settings

from ...errors import cannot_send
from ...fields import arguments_object, arguments_text, as_dict, as_int, as_list, as_str
from ...tokens import content_text
from ..base import UpstreamStreamError
from .usage import tokens_from_anthropic

STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


def _data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a ``data:`` URL."""
    if not url.startswith("data:"):
        return None
    header, _, data = url.partition(",")
    return header[5:].split(";")[0], data


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
    for i, part in enumerate(as_list(content)):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = as_str(part.get("text")) or as_str(part.get("refusal"))
            block: dict[str, Any] = {"type": "text", "text": text}
        elif kind == "image_url":
            image = part.get("image_url")
            block = _image_block(as_str(as_dict(image).get("url")) or as_str(image))
        elif kind == "file":
            inline = _data_url(as_str(as_dict(part.get("file")).get("file_data")))
            if inline is None or inline[0] != "application/pdf":
                raise cannot_send("A `file` part other than an inline PDF", f"{where}[{i}]")
            block = {
                "type": "document",
                "source": {"type": "base64", "media_type": inline[0], "data": inline[1]},
            }
        else:
            raise cannot_send(f"A content part of type `{kind}`", f"{where}[{i}].type")
        if isinstance(part.get("cache_control"), dict):
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def thinking_blocks(value: Any, where: str) -> list[dict[str, Any]]:
    """An assistant message's ``thinking_blocks`` as Messages blocks; raises ApiError
    (400) for one that is not a thinking block with its signature or a redacted one."""
    blocks = []
    for i, block in enumerate(as_list(value)):
        block = as_dict(block)
        kind = block.get("type")
        if kind == "thinking" and _texts(block, "thinking", "signature"):
            blocks.append(_thought(block["thinking"], block["signature"]))
        elif kind == "redacted_thinking" and _texts(block, "data"):
            blocks.append({"type": "redacted_thinking", "data": block["data"]})
        else:
            raise cannot_send(
                "A thinking block without its `signature` (or a redacted one without `data`)",
                f"{where}[{i}]",
            )
    return blocks


def _thought(thinking: str, signature: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": thinking, "signature": signature}


def _texts(block: dict[str, Any], *names: str) -> bool:
    return all(isinstance(block.get(name), str) for name in names)


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
        tool_choice = {"type": "tool", "name": as_str(choice["function"].get("name"))}
    if body.get("parallel_tool_calls") is False and has_tools:
        tool_choice = {**(tool_choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    return tool_choice


def chat_to_anthropic(body: dict[str, Any], model: str) -> dict[str, Any]:
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(as_list(body.get("messages"))):
        message = as_dict(message)
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = content_text(content)
            if text:
                system.append(text)
        elif role in ("tool", "function"):
            result = {
                "type": "tool_result",
                "tool_use_id": as_str(message.get("tool_call_id")) or as_str(message.get("name")),
                "content": content_text(content),
            }
            _append(messages, "user", [result])
        elif role == "assistant":
            blocks = thinking_blocks(
                message.get("thinking_blocks"), f"messages[{i}].thinking_blocks"
            )
            blocks += _blocks(content, f"messages[{i}].content")
            if as_str(message.get("refusal")):
                blocks.append({"type": "text", "text": message["refusal"]})
            calls = as_list(message.get("tool_calls"))
            legacy = as_dict(message.get("function_call"))
            if legacy:
                # The legacy function call has no id; its answer names the function.
                calls = [*calls, {"id": as_str(legacy.get("name")), "function": legacy}]
            for call in calls:
                call = as_dict(call)
                fn = as_dict(call.get("function"))
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": as_str(call.get("id")) or f"toolu_{uuid.uuid4().hex[:24]}",
                        "name": as_str(fn.get("name")),
                        "input": arguments_object(fn.get("arguments")),
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
    stops = [stop] if isinstance(stop, str) else [s for s in as_list(stop) if isinstance(s, str)]
    if stops:
        out["stop_sequences"] = stops
    if body.get("stream"):
        out["stream"] = True
    tools = [as_dict(t.get("function")) for t in as_list(body.get("tools")) if isinstance(t, dict)]
    tools = [fn for fn in tools if fn]
    if tools:
        out["tools"] = [
            {
                "name": as_str(fn.get("name")),
                "description": as_str(fn.get("description")),
                "input_schema": as_dict(fn.get("parameters"))
                or {"type": "object", "properties": {}},
            }
            for fn in tools
        ]
    tool_choice = _tool_choice(body, bool(tools))
    if tool_choice is not None:
        out["tool_choice"] = tool_choice
    if as_str(body.get("user")):
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


def _search(tool_input: Any) -> dict[str, Any]:
    return {"query": as_str(as_dict(tool_input).get("query")), "status": "completed", "sources": []}


def _search_result(block: dict[str, Any]) -> dict[str, Any]:
    """A web search's outcome: the pages it found, or that it failed."""
    content = block.get("content")
    if not isinstance(content, list):
        return {"status": "failed"}
    urls = [as_str(as_dict(r).get("url")) for r in content]
    return {"sources": [{"type": "url", "url": url} for url in urls if url]}


def anthropic_to_chat(message: dict[str, Any]) -> dict[str, Any]:
    text, reasoning, calls, thinking = [], [], [], []
    searches: dict[str, dict[str, Any]] = {}
    for block in as_list(message.get("content")):
        block = as_dict(block)
        kind = block.get("type")
        if kind == "text":
            text.append(as_str(block.get("text")))
        elif kind == "thinking":
            reasoning.append(as_str(block.get("thinking")))
            thinking.append(_thought(as_str(block.get("thinking")), as_str(block.get("signature"))))
        elif kind == "redacted_thinking":
            thinking.append({"type": "redacted_thinking", "data": as_str(block.get("data"))})
        elif kind == "server_tool_use" and block.get("name") == "web_search":
            searches[as_str(block.get("id"))] = _search(block.get("input"))
        elif kind == "web_search_tool_result":
            found = searches.get(as_str(block.get("tool_use_id")))
            if found is not None:
                found.update(_search_result(block))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": as_str(block.get("id")),
                    "type": "function",
                    "function": {
                        "name": as_str(block.get("name")),
                        "arguments": arguments_text(block.get("input")),
                    },
                }
            )
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    if thinking:
        reply["thinking_blocks"] = thinking
    if searches:
        reply["web_search_calls"] = [{"id": k, **v} for k, v in searches.items()]
    if calls:
        reply["tool_calls"] = calls
    result: dict[str, Any] = {
        "id": as_str(message.get("id")) or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": as_str(message.get("model")),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": STOP_TO_FINISH.get(as_str(message.get("stop_reason")), "stop"),
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
        # Anthropic block index -> the thinking text streamed so far
        self.thinking: dict[int, list[str]] = {}
        # Anthropic block index -> a web search's id and the JSON of its input so far
        self.searching: dict[int, tuple[str, list[str]]] = {}
        # A web search's id -> its query, once its input is whole
        self.searches: dict[str, dict[str, Any]] = {}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self.base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def feed(self, event: dict[str, Any]) -> Iterator[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = as_dict(event.get("message"))
            self.base = {
                "id": as_str(message.get("id")) or f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": as_str(message.get("model")),
            }
            self.usage.update(as_dict(message.get("usage")))
            yield self._chunk({"role": "assistant", "content": ""})
        elif kind == "content_block_start":
            block = as_dict(event.get("content_block"))
            if block.get("type") == "thinking":
                self.thinking[as_int(event.get("index"))] = [as_str(block.get("thinking"))]
            elif block.get("type") == "server_tool_use" and block.get("name") == "web_search":
                self.searching[as_int(event.get("index"))] = (as_str(block.get("id")), [])
            elif block.get("type") == "web_search_tool_result":
                search_id = as_str(block.get("tool_use_id"))
                found = self.searches.pop(search_id, _search({}))
                call = {"id": search_id, **found, **_search_result(block)}
                yield self._chunk({"web_search_call": call})
            elif block.get("type") == "redacted_thinking":
                redacted = {"type": "redacted_thinking", "data": as_str(block.get("data"))}
                yield self._chunk({"thinking_blocks": [redacted]})
            elif block.get("type") == "tool_use":
                index = self.tool_index[as_int(event.get("index"))] = len(self.tool_index)
                yield self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": as_str(block.get("id")),
                                "type": "function",
                                "function": {"name": as_str(block.get("name")), "arguments": ""},
                            }
                        ]
                    }
                )
        elif kind == "content_block_delta":
            delta = as_dict(event.get("delta"))
            dtype = delta.get("type")
            if dtype == "text_delta":
                yield self._chunk({"content": as_str(delta.get("text"))})
            elif dtype == "thinking_delta":
                text = as_str(delta.get("thinking"))
                self.thinking.setdefault(as_int(event.get("index")), []).append(text)
                yield self._chunk({"reasoning_content": text})
            elif dtype == "signature_delta":
                text = "".join(self.thinking.pop(as_int(event.get("index")), []))
                block = _thought(text, as_str(delta.get("signature")))
                yield self._chunk({"thinking_blocks": [block]})
            elif dtype == "input_json_delta" and as_int(event.get("index")) in self.searching:
                self.searching[as_int(event.get("index"))][1].append(
                    as_str(delta.get("partial_json"))
                )
            elif dtype == "input_json_delta" and as_int(event.get("index")) in self.tool_index:
                index = self.tool_index[as_int(event.get("index"))]
                yield self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "function": {"arguments": as_str(delta.get("partial_json"))},
                            }
                        ]
                    }
                )
        elif kind == "content_block_stop" and as_int(event.get("index")) in self.searching:
            search_id, parts = self.searching.pop(as_int(event.get("index")))
            self.searches[search_id] = _search(arguments_object("".join(parts)))
        elif kind == "message_delta":
            # Anthropic's stream usage is cumulative: the newest values win.
            self.usage.update(
                {k: v for k, v in as_dict(event.get("usage")).items() if v is not None}
            )
            stop = as_str(as_dict(event.get("delta")).get("stop_reason"))
            if stop and self.finish is None:
                self.finish = STOP_TO_FINISH.get(stop, "stop")
                yield self._chunk({}, self.finish)
        elif kind == "message_stop":
            yield {**self.base, "choices": [], "usage": openai_usage(self.usage)}
        elif kind == "error":
            error = as_dict(event.get("error"))
            raise UpstreamStreamError(
                "The upstream provider reported an error mid-stream "
                f"({as_str(error.get('type')) or 'error'})."
            )


# -- Messages -> chat completions (for /v1/messages on other channels) -----------------
