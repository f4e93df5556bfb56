"""OpenAI's Responses API on OpenAI-compatible channels.

A channel that speaks it (``responses_api``) gets ``/v1/responses`` as it came and
sends its typed events back byte for byte (``ResponseEvents``); the routes of the
responses it keeps are forwarded to it (``upstream_stored``). Every other channel
is sent chat completions: the request translated (``responses_to_chat``), the answer
translated back into a response (``answer_from_chat``) and the stream's chunks into
the Responses API's events, in its order, with sequence numbers and item ids
(``ChatToResponses``). Anthropic channels translate through the same chat
completions (``providers.anthropic.responses``).

What has no counterpart in chat completions is refused with a 400 naming it, before
anything is sent: hosted tools (web search, file search, code interpreter...),
custom tools, item references, images and files given by id. The model's own
history that chat completions cannot take (reasoning items, hosted tool calls of
an earlier turn) is left out of it.

Thinking that must go back to the upstream that produced it (Anthropic's signed
thinking blocks, ``thinking_blocks`` on a chat message) rides in the reasoning
item's ``encrypted_content``, opaque to the client as OpenAI's own is; a reasoning
item that comes back with it gives the blocks back to such an upstream
(``keep_thinking``).
"""

import base64
import binascii
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import orjson

from core.money import Units

from ... import sse
from ...dialects.base import StreamEvent, UpstreamReply
from ...dialects.responses import TERMINAL, input_items
from ...errors import cannot_send
from ...fields import as_dict, as_list, as_str
from ...selectors import ChannelInfo
from ...tokens import content_text
from .. import client
from ..base import UpstreamFailure, UpstreamStream, UpstreamStreamError
from ..http import failure_from_status, json_event, read_json, sse_events
from .usage import reported

# Items of the model's own history with no counterpart in chat completions: an
# earlier turn's reasoning and the hosted tools it ran are left out.
_OWN_HISTORY = frozenset(
    {
        "reasoning",
        "web_search_call",
        "file_search_call",
        "code_interpreter_call",
        "image_generation_call",
        "mcp_list_tools",
    }
)
_FINISH_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


# What ``encrypted_content`` holds when it carries thinking blocks.
_THINKING_PREFIX = "tgthink1."


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def thinking_content(blocks: list[dict[str, Any]]) -> str:
    """Thinking blocks as a reasoning item's ``encrypted_content``."""
    return _THINKING_PREFIX + base64.urlsafe_b64encode(orjson.dumps(blocks)).decode()


def thinking_of(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The thinking blocks a reasoning item's ``encrypted_content`` carries; none when
    it carries something else (OpenAI's own reasoning, say)."""
    content = item.get("encrypted_content")
    if not isinstance(content, str) or not content.startswith(_THINKING_PREFIX):
        return []
    try:
        blocks = orjson.loads(base64.urlsafe_b64decode(content[len(_THINKING_PREFIX) :]))
    except (binascii.Error, ValueError):
        return []
    return [b for b in as_list(blocks) if isinstance(b, dict)]


# -- the request ------------------------------------------------------------------------


def _user_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": as_str(part.get("text"))}
    if kind == "input_image":
        url = as_str(part.get("image_url"))
        if not url:
            raise cannot_send("An `input_image` given by `file_id`", where)
        image: dict[str, Any] = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        data = as_str(part.get("file_data"))
        if not data:
            raise cannot_send("An `input_file` given by `file_id` or `file_url`", where)
        file = {"file_data": data}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": as_dict(part.get("input_audio"))}
    raise cannot_send(f"A content part of type `{kind}`", f"{where}.type")


def _text_only(content: Any, where: str) -> str:
    """Content that chat completions take as text only (instructions, an assistant
    turn, a tool's output)."""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(as_list(content)):
        part = as_dict(part)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            texts.append(as_str(part.get("text")))
        elif kind == "refusal":
            texts.append(as_str(part.get("refusal")))
        else:
            raise cannot_send(f"A content part of type `{kind}` here", f"{where}[{j}].type")
    return "".join(texts)


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = as_str(item.get("role"))
    content = item.get("content")
    if role in ("system", "developer"):
        # Chat completions' ``developer`` role is OpenAI's own; every compatible
        # upstream takes ``system``.
        return {"role": "system", "content": _text_only(content, f"{where}.content")}
    if role == "assistant":
        return {"role": "assistant", "content": _text_only(content, f"{where}.content")}
    parts = [
        _user_part(as_dict(part), f"{where}.content[{j}]")
        for j, part in enumerate(as_list(content))
    ]
    if all(p["type"] == "text" for p in parts):
        return {"role": "user", "content": "".join(p["text"] for p in parts)}
    return {"role": "user", "content": parts}


def _messages(body: dict[str, Any], keep_thinking: bool) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    for i, item in enumerate(input_items(body)):
        where = f"input[{i}]"
        kind = as_str(item.get("type"))
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            call = {
                "id": as_str(item.get("call_id")) or as_str(item.get("id")),
                "type": "function",
                "function": {
                    "name": as_str(item.get("name")),
                    "arguments": as_str(item.get("arguments")),
                },
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": as_str(item.get("call_id")),
                    "content": _text_only(item.get("output"), f"{where}.output"),
                }
            )
        elif kind == "reasoning" and keep_thinking and (blocks := thinking_of(item)):
            # The turn's thinking goes ahead of what the model said and called after it.
            messages.append({"role": "assistant", "content": None, "thinking_blocks": blocks})
        elif kind == "item_reference":
            raise cannot_send("An `item_reference` (send the item itself)", where)
        elif kind not in _OWN_HISTORY:
            raise cannot_send(f"An input item of type `{kind}`", f"{where}.type")
    return messages


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = []
    for i, tool in enumerate(as_list(body.get("tools"))):
        tool = as_dict(tool)
        kind = tool.get("type")
        if kind != "function":
            raise cannot_send(f"The tool `{kind}` (a hosted or custom tool)", f"tools[{i}].type")
        function: dict[str, Any] = {"name": as_str(tool.get("name"))}
        for name in ("description", "parameters", "strict"):
            if tool.get(name) is not None:
                function[name] = tool[name]
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(out: dict[str, Any], choice: Any) -> None:
    if choice is None:
        return
    if choice in ("auto", "none", "required"):
        out["tool_choice"] = choice
        return
    choice = as_dict(choice)
    kind = choice.get("type")
    if kind == "function":
        out["tool_choice"] = {"type": "function", "function": {"name": as_str(choice.get("name"))}}
    elif kind == "allowed_tools":
        # Chat completions' own ``allowed_tools`` is OpenAI's alone: the tools are
        # narrowed to the allowed ones instead.
        allowed = {as_str(as_dict(t).get("name")) for t in as_list(choice.get("tools"))}
        out["tools"] = [t for t in out.get("tools", ()) if t["function"]["name"] in allowed]
        out["tool_choice"] = "required" if choice.get("mode") == "required" else "auto"
    else:
        raise cannot_send(f"A `tool_choice` of type `{kind}`", "tool_choice")


def _response_format(text: dict[str, Any]) -> dict[str, Any] | None:
    fmt = as_dict(text.get("format"))
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema: dict[str, Any] = {"name": as_str(fmt.get("name")) or "response"}
        for name in ("schema", "strict", "description"):
            if fmt.get(name) is not None:
                schema[name] = fmt[name]
        return {"type": "json_schema", "json_schema": schema}
    raise cannot_send(f"A `text.format` of type `{kind}`", "text.format.type")


def responses_to_chat(body: dict[str, Any], keep_thinking: bool = False) -> dict[str, Any]:
    """A Responses request as a chat-completions request; raises ApiError (400) for
    what chat completions cannot take. Only fields chat completions know are sent:
    compatible upstreams refuse fields they do not know (the thinking blocks that
    reasoning items carry only with ``keep_thinking``)."""
    out: dict[str, Any] = {
        "model": body.get("model"),
        "messages": _messages(body, keep_thinking),
    }
    tools = _tools(body)
    if tools:
        out["tools"] = tools
        if isinstance(body.get("parallel_tool_calls"), bool):
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    _tool_choice(out, body.get("tool_choice"))
    response_format = _response_format(as_dict(body.get("text")))
    if response_format is not None:
        out["response_format"] = response_format
    effort = as_dict(body.get("reasoning")).get("effort")
    if isinstance(effort, str):
        out["reasoning_effort"] = effort
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    if body.get("top_logprobs") is not None:
        out["logprobs"] = True
        out["top_logprobs"] = body["top_logprobs"]
    for name in ("temperature", "top_p", "user", "service_tier", "stream"):
        if body.get(name) is not None:
            out[name] = body[name]
    if "mock" in body:
        out["mock"] = body["mock"]
    return out


# -- the answer ------------------------------------------------------------------------------


def response_object(
    body: dict[str, Any],
    model: str,
    *,
    response_id: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    incomplete: str | None = None,
) -> dict[str, Any]:
    """A response as the Responses API gives it: the request's settings echoed; its
    ``usage`` is filled in with what is billed (``dialects.responses``)."""
    reasoning = as_dict(body.get("reasoning"))
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        # The model asked for, not the upstream's name for it.
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": body.get("store") is not False,
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": None,
        "user": body.get("user"),
    }


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _reasoning_item(item_id: str, text: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
    if text:
        item["summary"] = [{"type": "summary_text", "text": text}]
    if blocks:
        item["encrypted_content"] = thinking_content(blocks)
    return item


def web_search_item(search: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A web search the upstream ran (``web_search_calls`` of a chat message) as a
    ``web_search_call`` item; its sources only when the request ``include``s them."""
    action: dict[str, Any] = {"type": "search", "query": as_str(search.get("query"))}
    if "web_search_call.action.sources" in as_list(body.get("include")):
        action["sources"] = as_list(search.get("sources"))
    status = "failed" if search.get("status") == "failed" else "completed"
    return {"id": new_id("ws"), "type": "web_search_call", "status": status, "action": action}


def answer_from_chat(
    completion: dict[str, Any], body: dict[str, Any], model: str
) -> dict[str, Any]:
    """A chat completion as a response."""
    choices = as_list(completion.get("choices"))
    choice = as_dict(choices[0]) if choices else {}
    message = as_dict(choice.get("message"))
    incomplete = _FINISH_INCOMPLETE.get(as_str(choice.get("finish_reason")))
    status = "incomplete" if incomplete else "completed"
    output: list[dict[str, Any]] = []
    reasoning = as_str(message.get("reasoning_content")) or as_str(message.get("reasoning"))
    blocks = [b for b in as_list(message.get("thinking_blocks")) if isinstance(b, dict)]
    if reasoning or blocks:
        output.append(_reasoning_item(new_id("rs"), reasoning, blocks))
    for search in as_list(message.get("web_search_calls")):
        output.append(web_search_item(as_dict(search), body))
    text = content_text(message.get("content"))
    refusal = as_str(message.get("refusal"))
    if text or refusal:
        part = (
            {"type": "refusal", "refusal": refusal} if refusal and not text else _output_text(text)
        )
        output.append(
            {
                "id": new_id("msg"),
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": [part],
            }
        )
    for call in as_list(message.get("tool_calls")):
        call = as_dict(call)
        fn = as_dict(call.get("function"))
        output.append(
            {
                "id": new_id("fc"),
                "type": "function_call",
                "status": "completed",
                "call_id": as_str(call.get("id")) or new_id("call"),
                "name": as_str(fn.get("name")),
                "arguments": as_str(fn.get("arguments")),
            }
        )
    return response_object(
        body,
        model,
        response_id=new_id("resp"),
        created_at=int(time.time()),
        status=status,
        output=output,
        incomplete=incomplete,
    )


def reply_from_chat(reply: UpstreamReply, body: dict[str, Any], model: str) -> UpstreamReply:
    """A chat-completions reply as a response, billed on the tokens it reported; its
    ``usage`` is written from what is billed."""
    return UpstreamReply(
        body=answer_from_chat(reply.body, body, model), upstream_usage=None, tokens=reply.tokens
    )


async def answer(
    body: dict[str, Any], model: str, chat: Callable[[dict[str, Any]], Awaitable[UpstreamReply]]
) -> UpstreamReply:
    """A Responses request answered by ``chat`` (a chat-completions call)."""
    return reply_from_chat(await chat(responses_to_chat(body)), body, model)


# -- the stream -------------------------------------------------------------------------------


class _Open:
    """The output item being streamed."""

    def __init__(self, index: int, item: dict[str, Any], kind: str) -> None:
        self.index = index
        self.item = item
        # "text", "refusal", "reasoning" or "function_call"
        self.kind = kind
        self.parts: list[str] = []
        # A reasoning item's thinking blocks, as the chunks gave them
        self.blocks: list[dict[str, Any]] = []


class ChatToResponses:
    """``chat.completion.chunk`` dicts in, Responses API events out, in the order the
    API sends them: ``response.created`` and ``response.in_progress``; per output
    item, ``response.output_item.added``, its parts and deltas, their ``.done``
    events and ``response.output_item.done``; then ``response.completed`` (or
    ``response.incomplete`` when the output was cut off) with the whole response."""

    def __init__(self, body: dict[str, Any], model: str) -> None:
        self.body = body
        self.model = model
        self.id = new_id("resp")
        self.created = int(time.time())
        self.sequence = 0
        self.done: list[dict[str, Any]] = []
        self.open: _Open | None = None
        # chat tool-call index -> its item, once opened
        self.calls: dict[int, _Open] = {}
        self.finish = ""

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _response(self, status: str, incomplete: str | None = None) -> dict[str, Any]:
        return response_object(
            self.body,
            self.model,
            response_id=self.id,
            created_at=self.created,
            status=status,
            output=list(self.done),
            incomplete=incomplete,
        )

    def start(self) -> list[dict[str, Any]]:
        response = self._response("in_progress")
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def _open(self, kind: str, call: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        events = self._close()
        index = len(self.done)
        if kind == "reasoning":
            item: dict[str, Any] = {"id": new_id("rs"), "type": "reasoning", "summary": []}
        elif kind == "function_call":
            call = call or {}
            fn = as_dict(call.get("function"))
            item = {
                "id": new_id("fc"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": as_str(call.get("id")) or new_id("call"),
                "name": as_str(fn.get("name")),
                "arguments": "",
            }
        else:
            item = {
                "id": new_id("msg"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
        self.open = _Open(index, item, kind)
        item_id = item["id"]
        events.append(self._event("response.output_item.added", output_index=index, item=item))
        if kind == "reasoning":
            events.append(
                self._event(
                    "response.reasoning_summary_part.added",
                    item_id=item_id,
                    output_index=index,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
            )
        elif kind in ("text", "refusal"):
            part = _output_text("") if kind == "text" else {"type": "refusal", "refusal": ""}
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            )
        return events

    def _delta(self, delta: str) -> dict[str, Any]:
        current = self.open
        assert current is not None
        current.parts.append(delta)
        item_id, index = current.item["id"], current.index
        if current.kind == "reasoning":
            return self._event(
                "response.reasoning_summary_text.delta",
                item_id=item_id,
                output_index=index,
                summary_index=0,
                delta=delta,
            )
        if current.kind == "function_call":
            return self._event(
                "response.function_call_arguments.delta",
                item_id=item_id,
                output_index=index,
                delta=delta,
            )
        if current.kind == "refusal":
            return self._event(
                "response.refusal.delta",
                item_id=item_id,
                output_index=index,
                content_index=0,
                delta=delta,
            )
        return self._event(
            "response.output_text.delta",
            item_id=item_id,
            output_index=index,
            content_index=0,
            delta=delta,
            logprobs=[],
        )

    def _close(self, status: str = "completed") -> list[dict[str, Any]]:
        current, self.open = self.open, None
        if current is None:
            return []
        text = "".join(current.parts)
        item, index = current.item, current.index
        ids = {"item_id": item["id"], "output_index": index}
        events = []
        if current.kind == "reasoning":
            part = {"type": "summary_text", "text": text}
            events.append(
                self._event(
                    "response.reasoning_summary_text.done", **ids, summary_index=0, text=text
                )
            )
            events.append(
                self._event(
                    "response.reasoning_summary_part.done", **ids, summary_index=0, part=part
                )
            )
            item = _reasoning_item(item["id"], text, current.blocks)
            item["summary"] = [part]
        elif current.kind == "function_call":
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    **ids,
                    name=item["name"],
                    arguments=text,
                )
            )
            item = {**item, "status": "completed", "arguments": text}
        else:
            if current.kind == "refusal":
                part = {"type": "refusal", "refusal": text}
                events.append(
                    self._event("response.refusal.done", **ids, content_index=0, refusal=text)
                )
            else:
                part = _output_text(text)
                events.append(
                    self._event(
                        "response.output_text.done", **ids, content_index=0, text=text, logprobs=[]
                    )
                )
            events.append(
                self._event("response.content_part.done", **ids, content_index=0, part=part)
            )
            item = {**item, "status": status, "content": [part]}
        self.done.append(item)
        events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for choice in as_list(chunk.get("choices")):
            choice = as_dict(choice)
            if choice.get("index", 0) != 0:
                continue
            delta = as_dict(choice.get("delta"))
            reasoning = as_str(delta.get("reasoning_content")) or as_str(delta.get("reasoning"))
            for kind, text in (
                ("reasoning", reasoning),
                ("text", as_str(delta.get("content"))),
                ("refusal", as_str(delta.get("refusal"))),
            ):
                if text:
                    if self.open is None or self.open.kind != kind:
                        events += self._open(kind)
                    events.append(self._delta(text))
            search = delta.get("web_search_call")
            if isinstance(search, dict):
                events += self._web_search(search)
            blocks = [b for b in as_list(delta.get("thinking_blocks")) if isinstance(b, dict)]
            if blocks:
                if self.open is None or self.open.kind != "reasoning":
                    events += self._open("reasoning")
                assert self.open is not None
                self.open.blocks += blocks
            for call in as_list(delta.get("tool_calls")):
                call = as_dict(call)
                number = call.get("index", 0)
                current = self.calls.get(number) if isinstance(number, int) else None
                if current is None or current is not self.open:
                    # A new call (or, unusually, more of one already closed: its
                    # arguments so far are in its done event, so it opens anew).
                    events += self._open("function_call", call)
                    assert self.open is not None
                    if isinstance(number, int):
                        self.calls[number] = self.open
                arguments = as_str(as_dict(call.get("function")).get("arguments"))
                if arguments:
                    events.append(self._delta(arguments))
            if as_str(choice.get("finish_reason")):
                self.finish = choice["finish_reason"]
        return events

    def _web_search(self, search: dict[str, Any]) -> list[dict[str, Any]]:
        """A web search the upstream ran, as the events of one that runs here: its item
        added, in progress, searching, completed, done."""
        events = self._close()
        index = len(self.done)
        done = web_search_item(search, self.body)
        added = {**done, "status": "in_progress", "action": {"type": "search"}}
        ids = {"output_index": index, "item_id": done["id"]}
        events.append(self._event("response.output_item.added", output_index=index, item=added))
        for stage in ("in_progress", "searching", "completed"):
            events.append(self._event(f"response.web_search_call.{stage}", **ids))
        self.done.append(done)
        events.append(self._event("response.output_item.done", output_index=index, item=done))
        return events

    def finish_events(self) -> list[dict[str, Any]]:
        """The last events: the open item closed, then the response."""
        incomplete = _FINISH_INCOMPLETE.get(self.finish)
        events = self._close("incomplete" if incomplete else "completed")
        if incomplete:
            response = self._response("incomplete", incomplete)
            events.append(self._event("response.incomplete", response=response))
        else:
            events.append(self._event("response.completed", response=self._response("completed")))
        return events


class ResponsesFromChat:
    """A chat-completions stream seen as Responses API events. The first events come
    with the first chunk, so a stream that fails before it fails over like one that
    never began; the usage the chunks reported rides on the last event."""

    def __init__(self, chunks: UpstreamStream, body: dict[str, Any], model: str) -> None:
        self._chunks = chunks
        self._body = body
        self._model = model

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        translator = ChatToResponses(self._body, self._model)
        usage: Units | None = None
        async for chunk in self._chunks:
            if translator.sequence == 0:
                for event in translator.start():
                    yield StreamEvent(data=event)
            if chunk.usage is not None:
                usage = chunk.usage
            for event in translator.feed(chunk.data):
                yield StreamEvent(data=event)
        if translator.sequence == 0:
            for event in translator.start():
                yield StreamEvent(data=event)
        for event in translator.finish_events():
            last = event["type"] in TERMINAL
            yield StreamEvent(
                data=event,
                usage=usage if last else None,
                usage_final=last and usage is not None,
            )

    async def aclose(self) -> None:
        await self._chunks.aclose()


class ResponseEvents:
    """The typed events of an upstream speaking the Responses API, as they arrive
    (``StreamEvent.raw`` keeps their exact bytes); the last one carries the usage."""

    def __init__(self, response: client.UpstreamResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        ended = False
        async for raw, data, terminated in sse_events(self._response):
            if data.strip() == sse.DONE:
                break
            if not terminated:
                break  # an unfinished last event is not passed on
            event = json_event(data)
            kind = as_str(event.get("type"))
            if kind == "error" or ("error" in event and not kind):
                raise UpstreamStreamError("The upstream provider reported an error mid-stream.")
            usage = None
            if kind in TERMINAL:
                ended = True
                usage = reported(as_dict(event.get("response")))
            yield StreamEvent(
                data=event, raw=raw + b"\n\n", usage=usage, usage_final=usage is not None
            )
        if not ended:
            raise UpstreamStreamError("The upstream provider's stream ended early.")

    async def aclose(self) -> None:
        # Dropping an unfinished response's connection is how the upstream learns the
        # request was cancelled and stops generating.
        self._response.close()


# -- the responses an upstream keeps ----------------------------------------------------------


async def upstream_stored(
    channel: ChannelInfo, method: str, response_id: str, suffix: str = "", query: str = ""
) -> dict[str, Any]:
    """A stored-response route (``GET``/``DELETE /responses/{id}``, ``/input_items``,
    ``/cancel``) forwarded to the channel whose upstream keeps the response; raises
    UpstreamFailure as a relayed call does."""
    url = f"{channel.base_url}/responses/{quote(response_id, safe='')}{suffix}"
    if query:
        url = f"{url}?{query}"
    headers = {"authorization": f"Bearer {channel.api_key}", "accept": "application/json"}
    try:
        response = await client.request(method, url, headers, read_timeout=channel.request_timeout)
    except client.TransportTimeout:
        raise UpstreamFailure(
            504, "The upstream provider timed out.", code="upstream_timeout"
        ) from None
    except client.TransportError:
        raise UpstreamFailure(
            502, "The upstream provider could not be reached.", code="upstream_unreachable"
        ) from None
    if response.status >= 400:
        try:
            content = await response.read()
        except client.TransportError:
            content = b""
        raise failure_from_status(response.status, content, channel)
    return await read_json(response)
