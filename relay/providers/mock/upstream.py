"""The built-in mock upstream: OpenAI-shaped answers without a network.

It answers like a real model would in shape: plain replies, tool calls (and the
answer after a tool result), ``n`` choices, streaming with usage at the end. A
``mock`` object in the request body scripts it:

- ``reply``: the text to answer with;
- ``delay_ms``: pause before each streamed chunk (and before a plain answer);
- ``cached_tokens``, ``cache_write_tokens``, ``reasoning_tokens``: usage to report;
- ``usage``: false to report no usage at all;
- ``fail_after``: break the stream after this many content chunks;
- ``status``: answer with this HTTP error status instead.
"""

import asyncio
import hashlib
import math
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from ...tokens import content_text, count_messages, count_text


class MockStreamBroken(Exception):
    """The mock stream was told to fail part-way."""


class MockRequestInvalid(ValueError):
    """The request asks the mock for something it refuses, as a real upstream
    would refuse it: a 400 naming ``param``."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


# Longest a scripted delay may be: enough to stand in for a slow upstream, short
# enough that a typo cannot park a request for hours.
MAX_DELAY_MS = 60_000
# OpenAI's largest embedding (text-embedding-3-large).
MAX_DIMENSIONS = 3072


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _delay(value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and 0 <= value <= MAX_DELAY_MS


_OPTIONS: dict[str, tuple[Any, str]] = {
    "reply": (lambda v: isinstance(v, str), "a string"),
    "delay_ms": (_delay, f"a number of milliseconds from 0 to {MAX_DELAY_MS}"),
    "cached_tokens": (_whole, "a non-negative integer"),
    "cache_write_tokens": (_whole, "a non-negative integer"),
    "reasoning_tokens": (_whole, "a non-negative integer"),
    "usage": (lambda v: isinstance(v, bool), "a boolean"),
    "fail_after": (_whole, "a non-negative integer"),
    "status": (lambda v: _whole(v) and 400 <= v <= 599, "an HTTP error status (400-599)"),
}


def options(body: dict[str, Any]) -> dict[str, Any]:
    """The request's ``mock`` options, checked: MockRequestInvalid names the first
    one that is unknown or of the wrong type."""
    opts = body.get("mock")
    if opts is None:
        return {}
    if not isinstance(opts, dict):
        raise MockRequestInvalid("`mock` must be an object of mock options.", "mock")
    for name, value in opts.items():
        rule = _OPTIONS.get(name)
        if rule is None:
            known = ", ".join(sorted(_OPTIONS))
            raise MockRequestInvalid(
                f"`mock.{name}` is not a mock option (known: {known}).", f"mock.{name}"
            )
        if value is not None and not rule[0](value):
            raise MockRequestInvalid(f"`mock.{name}` must be {rule[1]}.", f"mock.{name}")
    return opts


def _last_message(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or [{}]
    last = messages[-1]
    return last if isinstance(last, dict) else {}


_SAMPLES: dict[str, Any] = {
    "string": "Paris",
    "integer": 1,
    "number": 1.5,
    "boolean": True,
    "array": [],
    "object": {},
}


def _sample_value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "example"
    if schema.get("enum"):
        return schema["enum"][0]
    return _SAMPLES.get(str(schema.get("type")), "example")


def _forced(body: dict[str, Any]) -> bool:
    """A named function forced with ``tool_choice``: OpenAI then ends the choice with
    ``finish_reason: "stop"``, not ``"tool_calls"``, and so does the mock."""
    choice = body.get("tool_choice")
    return isinstance(choice, dict) and isinstance(choice.get("function"), dict)


def _tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool call to make, if the request offers tools and has not just answered one."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or body.get("tool_choice") == "none":
        return None
    if _last_message(body).get("role") == "tool":
        return None
    tool = tools[0] if isinstance(tools[0], dict) else {}
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
        tool = next(
            (
                t
                for t in tools
                if isinstance(t, dict) and (t.get("function") or {}).get("name") == wanted
            ),
            tool,
        )
    fn = tool.get("function") or {}
    params = fn.get("parameters") or {}
    props = params.get("properties") or {}
    required = params.get("required") or list(props)
    args = {name: _sample_value(props.get(name)) for name in required}
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": fn.get("name", "tool"), "arguments": orjson.dumps(args).decode()},
    }


def reply_text(body: dict[str, Any]) -> str:
    scripted = options(body).get("reply")
    if isinstance(scripted, str):
        return scripted
    last = _last_message(body)
    if last.get("role") == "tool":
        return f"The tool returned: {content_text(last.get('content'))[:200]}"
    said = content_text(last.get("content"))[:200]
    return f"Hello from the Tollgate mock upstream. You said: {said}"


def _usage(body: dict[str, Any], completion_per_choice: int, n: int) -> dict[str, Any]:
    opts = options(body)
    prompt = count_messages(body.get("messages") or [])
    cached = min(int(opts.get("cached_tokens") or 0), prompt)
    cache_write = min(int(opts.get("cache_write_tokens") or 0), prompt - cached)
    reasoning = int(opts.get("reasoning_tokens") or 0)
    completion = completion_per_choice * n + reasoning
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    if cache_write:
        usage["prompt_tokens_details"]["cache_write_tokens"] = cache_write
    return usage


def _choice_count(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def _completion_tokens(text: str, call: dict[str, Any] | None) -> int:
    if call is not None:
        fn = call["function"]
        return count_text(fn["name"]) + count_text(fn["arguments"]) + 3
    return count_text(text)


def completion(body: dict[str, Any]) -> dict[str, Any]:
    n = _choice_count(body)
    call = _tool_call(body)
    text = reply_text(body)
    if call is not None:
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "stop" if _forced(body) else "tool_calls"
    else:
        message = {"role": "assistant", "content": text}
        finish = "stop"
    result: dict[str, Any] = {
        "id": f"chatcmpl-mock{uuid.uuid4().hex[:20]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "mock"),
        "system_fingerprint": "fp_tollgate_mock",
        "choices": [
            {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
            for i in range(n)
        ],
    }
    if options(body).get("usage") is not False:
        result["usage"] = _usage(body, _completion_tokens(text, call), n)
    return result


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)] if text else []


async def completion_chunks(body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    """The same answer as ``completion`` as a sequence of ``chat.completion.chunk``s."""
    opts = options(body)
    delay = float(opts.get("delay_ms") or 0) / 1000
    fail_after = opts.get("fail_after")
    n = _choice_count(body)
    call = _tool_call(body)
    text = reply_text(body)
    base = {
        "id": f"chatcmpl-mock{uuid.uuid4().hex[:20]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "mock"),
        "system_fingerprint": "fp_tollgate_mock",
    }

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {**base, "choices": choices, **extra}

    sent = 0
    for i in range(n):
        if delay:
            await asyncio.sleep(delay)
        yield chunk(
            [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
        )
    if call is not None:
        fn = call["function"]
        for i in range(n):
            yield chunk(
                [
                    {
                        "index": i,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {"name": fn["name"], "arguments": ""},
                                }
                            ]
                        },
                        "finish_reason": None,
                    }
                ]
            )
            args = fn["arguments"]
            for start in range(0, len(args), 8):
                if delay:
                    await asyncio.sleep(delay)
                yield chunk(
                    [
                        {
                            "index": i,
                            "delta": {
                                "tool_calls": [
                                    {"index": 0, "function": {"arguments": args[start : start + 8]}}
                                ]
                            },
                            "finish_reason": None,
                        }
                    ]
                )
        finish = "stop" if _forced(body) else "tool_calls"
    else:
        for piece in _pieces(text):
            for i in range(n):
                if fail_after is not None and sent >= int(fail_after):
                    raise MockStreamBroken("mock upstream stream broke")
                if delay:
                    await asyncio.sleep(delay)
                yield chunk([{"index": i, "delta": {"content": piece}, "finish_reason": None}])
                sent += 1
        finish = "stop"
    for i in range(n):
        yield chunk([{"index": i, "delta": {}, "finish_reason": finish}])
    stream_options = body.get("stream_options")
    wants_usage = isinstance(stream_options, dict) and stream_options.get("include_usage")
    if wants_usage and opts.get("usage") is not False:
        yield chunk([], usage=_usage(body, _completion_tokens(text, call), n))


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """Deterministic unit vectors derived from each input's hash."""
    value = body.get("input")
    items = (
        [value]
        if isinstance(value, str)
        or (isinstance(value, list) and value and isinstance(value[0], int))
        else value or []
    )
    dims = body["dimensions"] if isinstance(body.get("dimensions"), int) else 16
    if dims > MAX_DIMENSIONS:
        raise MockRequestInvalid(
            f"`dimensions` must be at most {MAX_DIMENSIONS}; got {dims}.", "dimensions"
        )
    data, tokens = [], 0
    for index, item in enumerate(items):
        text = item if isinstance(item, str) else " ".join(map(str, item))
        tokens += count_text(item) if isinstance(item, str) else len(item)
        digest = hashlib.sha256(text.encode()).digest()
        raw = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(dims)]
        norm = math.sqrt(sum(x * x for x in raw)) or 1.0
        data.append({"object": "embedding", "index": index, "embedding": [x / norm for x in raw]})
    return {
        "object": "list",
        "data": data,
        "model": body.get("model", "mock"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
