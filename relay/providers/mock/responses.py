"""The built-in mock's Responses API and legacy completions, shaped like OpenAI's and
scripted by the same ``mock`` options (``upstream``).

A response holds, in order: a reasoning item with a summary when the request asks
for ``reasoning`` (or the options script reasoning tokens), a ``web_search_call``
when a web search tool is offered, then a function call when function tools are
offered (after a ``function_call_output``, the answer to it), or the reply, cut at
``max_output_tokens`` (the response is then ``incomplete``). Its usage counts the
input, reports the cached and reasoning tokens the options script, and is left out
with ``usage: false``. Streams send the same response as the Responses API's
events; ``delay_ms`` and ``fail_after`` apply to its text deltas.

A legacy completion answers the prompt (after it, with ``echo``), ``n`` choices,
with ``logprobs`` when asked for; its stream ends with the usage chunk when the
request asks for it.
"""

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from ...dialects.completions import COMPLETIONS
from ...dialects.responses import RESPONSES, input_items, item_text
from ...fields import as_dict, as_list, as_str
from ...tokens import count_text
from ..openai.responses import new_id, response_object
from .upstream import (
    MockStreamBroken,
    _choice_count,
    _pieces,
    _sample_value,
    options,
)

_ARGUMENT_PIECE = 8


def _said(items: list[dict[str, Any]]) -> str:
    for item in reversed(items):
        if item.get("type") == "message" and item.get("role") == "user":
            return item_text(item)[:200]
    return ""


def _tool_output(items: list[dict[str, Any]]) -> str | None:
    """The output of the function call the request answers, if it ends with one."""
    if items and items[-1].get("type") == "function_call_output":
        return item_text(items[-1])[:200]
    return None


def _function_call(body: dict[str, Any], answering: bool) -> dict[str, Any] | None:
    tools = [as_dict(t) for t in as_list(body.get("tools")) if as_dict(t).get("type") == "function"]
    if not tools or answering or body.get("tool_choice") == "none":
        return None
    tool = tools[0]
    choice = as_dict(body.get("tool_choice"))
    if choice.get("type") == "function":
        tool = next((t for t in tools if t.get("name") == choice.get("name")), tool)
    params = as_dict(tool.get("parameters"))
    props = as_dict(params.get("properties"))
    required = params.get("required") or list(props)
    args = {name: _sample_value(props.get(name)) for name in required if isinstance(name, str)}
    return {
        "id": new_id("fc"),
        "type": "function_call",
        "status": "completed",
        "call_id": new_id("call"),
        "name": as_str(tool.get("name")) or "tool",
        "arguments": orjson.dumps(args).decode(),
    }


def _searches(body: dict[str, Any]) -> bool:
    return any(
        as_str(as_dict(t).get("type")).startswith("web_search") for t in as_list(body.get("tools"))
    )


def _cut(text: str, limit: Any) -> tuple[str, bool]:
    """The text within ``limit`` tokens (whole words), and whether it was cut."""
    if not isinstance(limit, int) or count_text(text) <= limit:
        return text, False
    kept = ""
    for piece in _pieces(text):
        if count_text(kept + piece) > limit:
            break
        kept += piece
    return kept, True


def _usage(body: dict[str, Any], output: int, reasoning: int) -> dict[str, Any]:
    opts = options(body)
    prompt = RESPONSES.prompt_tokens(body)
    cached = min(int(opts.get("cached_tokens") or 0), prompt)
    details: dict[str, Any] = {"cached_tokens": cached}
    cache_write = min(int(opts.get("cache_write_tokens") or 0), prompt - cached)
    if cache_write:
        details["cache_write_tokens"] = cache_write
    return {
        "input_tokens": prompt,
        "input_tokens_details": details,
        "output_tokens": output + reasoning,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + output + reasoning,
    }


def response(body: dict[str, Any]) -> dict[str, Any]:
    opts = options(body)
    items = input_items(body)
    said = _said(items)
    answered = _tool_output(items)
    output: list[dict[str, Any]] = []
    scripted_reasoning = int(opts.get("reasoning_tokens") or 0)
    summary = ""
    if isinstance(body.get("reasoning"), dict) or scripted_reasoning:
        summary = f"Considering the request: {said[:80]}"
        output.append(
            {
                "id": new_id("rs"),
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": summary}],
            }
        )
    if _searches(body) and answered is None:
        output.append(
            {
                "id": new_id("ws"),
                "type": "web_search_call",
                "status": "completed",
                "action": {"type": "search", "query": said[:100]},
            }
        )
    call = _function_call(body, answered is not None)
    incomplete = False
    if call is not None:
        output.append(call)
        produced = count_text(call["name"]) + count_text(call["arguments"]) + 3
    else:
        scripted = opts.get("reply")
        if isinstance(scripted, str):
            text = scripted
        elif answered is not None:
            text = f"The tool returned: {answered}"
        else:
            text = f"Hello from the Tollgate mock upstream. You said: {said}"
        text, incomplete = _cut(text, body.get("max_output_tokens"))
        output.append(
            {
                "id": new_id("msg"),
                "type": "message",
                "status": "incomplete" if incomplete else "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                ],
            }
        )
        produced = count_text(text)
    result = response_object(
        body,
        as_str(body.get("model")) or "mock",
        response_id=f"resp_mock{uuid.uuid4().hex}",
        created_at=int(time.time()),
        status="incomplete" if incomplete else "completed",
        output=output,
        incomplete="max_output_tokens" if incomplete else None,
    )
    if opts.get("usage") is not False:
        result["usage"] = _usage(body, produced, scripted_reasoning or count_text(summary))
    return result


async def response_events(body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    """``response`` as the Responses API streams it."""
    opts = options(body)
    delay = float(opts.get("delay_ms") or 0) / 1000
    fail_after = opts.get("fail_after")
    final = response(body)
    numbers = itertools.count()
    sent = 0

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "sequence_number": next(numbers), **fields}

    async def pause() -> None:
        if delay:
            await asyncio.sleep(delay)

    started = {**final, "status": "in_progress", "output": [], "usage": None}
    started["incomplete_details"] = None
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    for index, item in enumerate(final["output"]):
        ids = {"item_id": item["id"], "output_index": index}
        kind = item["type"]
        if kind == "message":
            part = item["content"][0]
            yield event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            yield event(
                "response.content_part.added", **ids, content_index=0, part={**part, "text": ""}
            )
            for piece in _pieces(part["text"]):
                if fail_after is not None and sent >= int(fail_after):
                    raise MockStreamBroken("mock upstream stream broke")
                await pause()
                yield event(
                    "response.output_text.delta", **ids, content_index=0, delta=piece, logprobs=[]
                )
                sent += 1
            yield event(
                "response.output_text.done", **ids, content_index=0, text=part["text"], logprobs=[]
            )
            yield event("response.content_part.done", **ids, content_index=0, part=part)
        elif kind == "reasoning":
            part = item["summary"][0]
            yield event(
                "response.output_item.added", output_index=index, item={**item, "summary": []}
            )
            yield event(
                "response.reasoning_summary_part.added",
                **ids,
                summary_index=0,
                part={**part, "text": ""},
            )
            for piece in _pieces(part["text"]):
                await pause()
                yield event(
                    "response.reasoning_summary_text.delta", **ids, summary_index=0, delta=piece
                )
            yield event(
                "response.reasoning_summary_text.done", **ids, summary_index=0, text=part["text"]
            )
            yield event("response.reasoning_summary_part.done", **ids, summary_index=0, part=part)
        elif kind == "function_call":
            arguments = item["arguments"]
            yield event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            for start in range(0, len(arguments), _ARGUMENT_PIECE):
                await pause()
                yield event(
                    "response.function_call_arguments.delta",
                    **ids,
                    delta=arguments[start : start + _ARGUMENT_PIECE],
                )
            yield event(
                "response.function_call_arguments.done",
                **ids,
                name=item["name"],
                arguments=arguments,
            )
        else:  # a web search
            yield event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress"},
            )
            for step in ("in_progress", "searching", "completed"):
                await pause()
                yield event(f"response.web_search_call.{step}", **ids)
        yield event("response.output_item.done", output_index=index, item=item)
    terminal = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    yield event(terminal, response=final)


# -- legacy completions --------------------------------------------------------------------


def _prompt_text(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    first = as_list(prompt)[0] if as_list(prompt) else ""
    if isinstance(first, str):
        return first
    tokens = first if isinstance(first, list) else as_list(prompt)
    return " ".join(str(t) for t in tokens)


def _completion_text(body: dict[str, Any]) -> str:
    scripted = options(body).get("reply")
    if isinstance(scripted, str):
        return scripted
    return f" Hello from the Tollgate mock upstream. You wrote: {_prompt_text(body)[:200]}"


def _logprobs(text: str) -> dict[str, Any]:
    pieces = _pieces(text)
    offsets = list(itertools.accumulate((len(p) for p in pieces), initial=0))[:-1]
    return {
        "tokens": pieces,
        "token_logprobs": [-0.1] * len(pieces),
        "top_logprobs": [{piece: -0.1} for piece in pieces],
        "text_offset": offsets,
    }


def _completion_usage(body: dict[str, Any], text: str) -> dict[str, Any]:
    opts = options(body)
    prompt = COMPLETIONS.prompt_tokens(body)
    best_of = body.get("best_of")
    candidates = max(_choice_count(body), best_of if isinstance(best_of, int) else 1)
    completion = count_text(text) * candidates
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": min(int(opts.get("cached_tokens") or 0), prompt)
        },
    }


def _completion_base(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"cmpl-mock{uuid.uuid4().hex[:20]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model", "mock"),
        "system_fingerprint": "fp_tollgate_mock",
    }


def completion(body: dict[str, Any]) -> dict[str, Any]:
    text = _completion_text(body)
    shown = _prompt_text(body) + text if body.get("echo") is True else text
    wants_logprobs = isinstance(body.get("logprobs"), int)
    result = {
        **_completion_base(body),
        "choices": [
            {
                "text": shown,
                "index": i,
                "logprobs": _logprobs(shown) if wants_logprobs else None,
                "finish_reason": "stop",
            }
            for i in range(_choice_count(body))
        ],
    }
    if options(body).get("usage") is not False:
        result["usage"] = _completion_usage(body, text)
    return result


async def completion_chunks(body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    """The same answer as ``completion`` as a sequence of ``text_completion`` chunks."""
    opts = options(body)
    delay = float(opts.get("delay_ms") or 0) / 1000
    fail_after = opts.get("fail_after")
    text = _completion_text(body)
    base = _completion_base(body)
    n = _choice_count(body)
    sent = 0
    for piece in filter(None, _pieces(text)):
        for i in range(n):
            if fail_after is not None and sent >= int(fail_after):
                raise MockStreamBroken("mock upstream stream broke")
            if delay:
                await asyncio.sleep(delay)
            choice = {"text": piece, "index": i, "logprobs": None, "finish_reason": None}
            yield {**base, "choices": [choice]}
            sent += 1
    for i in range(n):
        choice = {"text": "", "index": i, "logprobs": None, "finish_reason": "stop"}
        yield {**base, "choices": [choice]}
    stream_options = body.get("stream_options")
    wants_usage = isinstance(stream_options, dict) and stream_options.get("include_usage")
    if wants_usage and opts.get("usage") is not False:
        yield {**base, "choices": [], "usage": _completion_usage(body, text)}
