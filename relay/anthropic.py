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

from billing.pricing import TokenCounts

from . import client, sse
from .adapters import (
    StreamEvent,
    UpstreamFailure,
    UpstreamReply,
    UpstreamStreamError,
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


def _loads_args(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


# -- chat completions -> Messages ---------------------------------------------------


def _image_block(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";")[0] or "image/png"
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise invalid_request("A message `content` must be a string or an array of parts.")
    blocks = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            block: dict[str, Any] = {"type": "text", "text": str(part.get("text", ""))}
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            block = _image_block(str(url or ""))
        else:
            raise invalid_request(
                f"Content parts of type `{kind}` cannot be sent to this model's provider."
            )
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


def chat_to_anthropic(body: dict[str, Any], model: str) -> dict[str, Any]:
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            text = content_text(message.get("content"))
            if text:
                system.append(text)
        elif role in ("tool", "function"):
            _append(
                messages,
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": str(
                            message.get("tool_call_id") or message.get("name") or ""
                        ),
                        "content": content_text(message.get("content")),
                    }
                ],
            )
        elif role == "assistant":
            blocks = _blocks(message.get("content"))
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                        "name": fn.get("name", ""),
                        "input": _loads_args(fn.get("arguments")),
                    }
                )
            _append(messages, "assistant", blocks)
        else:
            _append(messages, "user", _blocks(message.get("content")))

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
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("stream"):
        out["stream"] = True
    tools = body.get("tools")
    if tools:
        out["tools"] = [
            {
                "name": t["function"].get("name", ""),
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters")
                or {"type": "object", "properties": {}},
            }
            for t in tools
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
    choice = body.get("tool_choice")
    tool_choice: dict[str, Any] | None = None
    if choice == "auto":
        tool_choice = {"type": "auto"}
    elif choice == "required":
        tool_choice = {"type": "any"}
    elif choice == "none":
        tool_choice = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        tool_choice = {"type": "tool", "name": choice["function"].get("name", "")}
    if body.get("parallel_tool_calls") is False and tools:
        tool_choice = {**(tool_choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if tool_choice is not None:
        out["tool_choice"] = tool_choice
    if isinstance(body.get("user"), str) and body["user"]:
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


def anthropic_to_chat(message: dict[str, Any]) -> dict[str, Any]:
    text, reasoning, calls = [], [], []
    for block in message.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    if calls:
        reply["tool_calls"] = calls
    result: dict[str, Any] = {
        "id": message.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": STOP_TO_FINISH.get(message.get("stop_reason") or "", "stop"),
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
            message = event.get("message") or {}
            self.base = {
                "id": message.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": message.get("model", ""),
            }
            self.usage.update(message.get("usage") or {})
            yield self._chunk({"role": "assistant", "content": ""})
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tool_index[event.get("index", 0)] = len(self.tool_index)
                yield self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": block.get("id"),
                                "type": "function",
                                "function": {"name": block.get("name", ""), "arguments": ""},
                            }
                        ]
                    }
                )
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                yield self._chunk({"content": delta.get("text", "")})
            elif dtype == "thinking_delta":
                yield self._chunk({"reasoning_content": delta.get("thinking", "")})
            elif dtype == "input_json_delta":
                index = self.tool_index.get(event.get("index", 0), 0)
                yield self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "function": {"arguments": delta.get("partial_json", "")},
                            }
                        ]
                    }
                )
        elif kind == "message_delta":
            # Anthropic's stream usage is cumulative: the newest values win.
            self.usage.update(
                {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            )
            stop = (event.get("delta") or {}).get("stop_reason")
            if stop and self.finish is None:
                self.finish = STOP_TO_FINISH.get(stop, "stop")
                yield self._chunk({}, self.finish)
        elif kind == "message_stop":
            yield {**self.base, "choices": [], "usage": openai_usage(self.usage)}
        elif kind == "error":
            error = event.get("error") or {}
            kind = error.get("type", "error")
            raise UpstreamStreamError(
                f"The upstream provider reported an error mid-stream ({kind})."
            )


# -- Messages -> chat completions (for /v1/messages on other channels) -----------------


def _chat_parts(content: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """User content blocks -> (chat content parts, tool messages)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}], []
    parts, tools = [], []
    for block in content or []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            source = block.get("source") or {}
            if source.get("type") == "base64":
                url = (
                    f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
                )
            else:
                url = source.get("url", "")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "tool_result":
            inner = block.get("content")
            text = inner if isinstance(inner, str) else content_text(inner)
            tools.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text}
            )
    return parts, tools


def messages_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append(
            {
                "role": "system",
                "content": system if isinstance(system, str) else content_text(system),
            }
        )
    for message in body.get("messages") or []:
        role, content = message.get("role"), message.get("content")
        if role == "assistant":
            blocks = (
                [{"type": "text", "text": content}] if isinstance(content, str) else content or []
            )
            text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
            calls = [
                {
                    "id": b.get("id"),
                    "type": "function",
                    "function": {
                        "name": b.get("name", ""),
                        "arguments": orjson.dumps(b.get("input") or {}).decode(),
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
            parts, tool_messages = _chat_parts(content)
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
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    if body.get("tools"):
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name", ""),
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema") or {"type": "object", "properties": {}},
                },
            }
            for t in body["tools"]
            if isinstance(t, dict)
        ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "auto":
            out["tool_choice"] = "auto"
        elif kind == "any":
            out["tool_choice"] = "required"
        elif kind == "none":
            out["tool_choice"] = "none"
        elif kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
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
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = content_text(reply.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    for call in reply.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": fn.get("name", ""),
                "input": _loads_args(fn.get("arguments")),
            }
        )
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or model,
        "content": content,
        "stop_reason": FINISH_TO_STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(tokens),
    }


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
                        "model": chunk.get("model") or self.model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": 0, "output_tokens": 0},
                    },
                }
            )
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
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
            for call in delta.get("tool_calls") or []:
                tool_index = call.get("index", 0)
                fn = call.get("function") or {}
                if tool_index not in self.tool_blocks:
                    events += self._open(
                        "tool_use",
                        {
                            "type": "tool_use",
                            "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                            "name": fn.get("name", ""),
                            "input": {},
                        },
                    )
                    self.tool_blocks[tool_index] = self.block or 0
                if fn.get("arguments"):
                    events.append(
                        {
                            "type": "content_block_delta",
                            "index": self.tool_blocks[tool_index],
                            "delta": {"type": "input_json_delta", "partial_json": fn["arguments"]},
                        }
                    )
            if choice.get("finish_reason"):
                self.stop_reason = FINISH_TO_STOP.get(choice["finish_reason"], "end_turn")
        return b"".join(event_bytes(e) for e in events)

    def finish(self, tokens: TokenCounts, cost: str) -> bytes:
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


def _headers(channel: ChannelInfo) -> dict[str, str]:
    return {
        "x-api-key": channel.api_key,
        "anthropic-version": ANTHROPIC_VERSION,
        "content-type": "application/json",
    }


class AnthropicAdapter:
    """A channel speaking the Anthropic Messages API (``{base_url}/v1/messages``)."""

    async def _send(self, channel: ChannelInfo, body: dict[str, Any]) -> client.UpstreamResponse:
        try:
            return await send(channel, f"{channel.base_url}/v1/messages", body, _headers(channel))
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

    async def messages_complete(self, channel: ChannelInfo, body: dict[str, Any]) -> UpstreamReply:
        data = await read_json(await self._send(channel, body))
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        return UpstreamReply(
            body=data, upstream_usage=usage, tokens=tokens_from_anthropic(usage) if usage else None
        )

    async def messages_stream(
        self, channel: ChannelInfo, body: dict[str, Any]
    ) -> "AnthropicEvents":
        return AnthropicEvents(await self._send(channel, {**body, "stream": True}))

    async def complete(self, channel: ChannelInfo, body: dict[str, Any]) -> UpstreamReply:
        reply = await self.messages_complete(channel, _translated(body))
        chat = anthropic_to_chat(reply.body)
        return UpstreamReply(body=chat, upstream_usage=chat.get("usage"), tokens=reply.tokens)

    async def open_stream(self, channel: ChannelInfo, body: dict[str, Any]) -> "TranslatedStream":
        events = await self.messages_stream(channel, _translated(body))
        return TranslatedStream(events)


def _translated(body: dict[str, Any]) -> dict[str, Any]:
    try:
        return chat_to_anthropic(body, body["model"])
    except ApiError as exc:
        # Content Anthropic cannot take is the caller's to fix: no failover, no charge.
        raise UpstreamFailure(
            exc.status, exc.message, code="unsupported_content", retryable=False, client_error=exc
        ) from None


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
