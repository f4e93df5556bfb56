"""A scripted OpenAI-compatible upstream served over loopback HTTP.

By default it answers like the built-in mock (same generators, so the ``mock`` body
options work here too); a test can queue behaviours for the next requests:

- ``status``/``body``/``message``: answer with that status and body instead;
- ``delay``: seconds before answering (before the stream starts, for a stream);
- ``chunk_delay``: seconds before each streamed chunk;
- ``usage_on_content``: put the stream's usage on the last content chunk;
- ``no_done``: end the stream without ``data: [DONE]``;
- ``break_after``: drop the connection after that many chunks;
- ``error_after``: send an error event after that many chunks and stop;
- ``stall_after``: go silent (until the client leaves) after that many chunks;
- ``extra_raw``: JSON text spliced into each streamed chunk's object (``"k": v``).
"""

import asyncio
import collections
import hashlib
import threading
from typing import Any

import orjson

from relay.providers.mock import upstream as mock


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: collections.deque[dict[str, Any]] = collections.deque()
        self.delay = 0.0
        self.streams_finished = 0
        self.streams_cancelled = 0
        self.stream_events = threading.Event()
        self.probes = 0
        self.probe_status = 200
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.probes = 0
            self.probe_status = 200
            self.requests.clear()
            self.script.clear()
            self.delay = 0.0
            self.streams_finished = 0
            self.streams_cancelled = 0
            self.stream_events.clear()

    def then(self, **behaviour: Any) -> "FakeUpstream":
        """Queue a behaviour for one future request."""
        self.script.append(behaviour)
        return self

    @property
    def calls(self) -> int:
        return len(self.requests)

    async def __call__(self, scope, receive, send) -> None:
        assert scope["type"] == "http"
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        body = orjson.loads(raw) if raw else {}
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if scope["method"] == "GET":  # the health probe's model list
            with self._lock:
                self.probes += 1
                status = self.probe_status
            await _send_json(send, status, {"object": "list", "data": []})
            return
        with self._lock:
            self.requests.append({"path": scope["path"], "headers": headers, "json": body})
            behaviour = self.script.popleft() if self.script else {}
        delay = behaviour.get("delay", self.delay)
        if delay:
            await asyncio.sleep(delay)
        status = behaviour.get("status", 200)
        if status < 400 and body.get("stream") and "body" not in behaviour:
            await self._stream(body, behaviour, receive, send)
            return
        if "body" in behaviour:
            payload = behaviour["body"]
        elif status >= 400:
            message = behaviour.get("message", "upstream failure")
            payload = {"error": {"message": message, "type": "server_error"}}
        elif scope["path"].endswith("/embeddings"):
            payload = mock.embeddings(body)
        else:
            payload = mock.completion(body)
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def _stream(self, body, behaviour, receive, send) -> None:
        gone = asyncio.Event()

        async def watch_disconnect():
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch_disconnect())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        chunks = [c async for c in _all_chunks(body)]
        if behaviour.get("usage_on_content"):
            usage_chunk = next((c for c in chunks if c.get("usage")), None)
            if usage_chunk is not None:
                chunks.remove(usage_chunk)
                finishing = [
                    c for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")
                ]
                finishing[-1]["usage"] = usage_chunk["usage"]
        chunk_delay = behaviour.get("chunk_delay", 0)
        try:
            for sent, chunk in enumerate(chunks):
                if sent == behaviour.get("break_after"):
                    raise ConnectionAbortedError("scripted break")
                if sent == behaviour.get("error_after"):
                    error = {"error": {"message": "overloaded", "type": "server_error"}}
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b"data: " + orjson.dumps(error) + b"\n\n",
                        }
                    )
                    await send({"type": "http.response.body", "body": b""})
                    return
                pause = 30.0 if sent == behaviour.get("stall_after") else chunk_delay
                if pause:
                    try:
                        await asyncio.wait_for(gone.wait(), pause)
                    except TimeoutError:
                        pass
                if gone.is_set():
                    self.streams_cancelled += 1
                    return
                data = orjson.dumps(chunk)
                if behaviour.get("extra_raw"):
                    data = data[:-1] + b"," + behaviour["extra_raw"] + b"}"
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"data: " + data + b"\n\n",
                        "more_body": True,
                    }
                )
            tail = b"" if behaviour.get("no_done") else b"data: [DONE]\n\n"
            await send({"type": "http.response.body", "body": tail})
            self.streams_finished += 1
        finally:
            watcher.cancel()
            self.stream_events.set()


async def _all_chunks(body):
    """The mock's chunks, without its own delays or scripted failures."""
    clean = {
        **body,
        "mock": {
            k: v for k, v in mock.options(body).items() if k not in ("delay_ms", "fail_after")
        },
    }
    return_chunks = mock.completion_chunks(clean)
    async for chunk in return_chunks:
        yield chunk


async def _send_json(send, status: int, payload: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": orjson.dumps(payload)})


THOUGHT = "The user wants the weather."
# A web search Anthropic ran: its call, then its results.
SEARCHED = [
    {
        "type": "server_tool_use",
        "id": "srvtoolu_01",
        "name": "web_search",
        "input": {"query": "weather Paris"},
    },
    {
        "type": "web_search_tool_result",
        "tool_use_id": "srvtoolu_01",
        "content": [
            {
                "type": "web_search_result",
                "url": "https://weather.example/paris",
                "title": "Paris weather",
                "encrypted_content": "EqgfCioIARgBIiQ3",
                "page_age": "1 day ago",
            }
        ],
    },
]


def signature(thinking: str) -> str:
    return "sig-" + hashlib.sha256(thinking.encode()).hexdigest()[:24]


def _thinking_refusal(body: dict[str, Any]) -> str | None:
    """Anthropic's checks of the thinking a request sends back: every block signed by
    this upstream, and with thinking on, an assistant turn that called tools beginning
    with its thinking."""
    assistant = [m for m in body["messages"] if m["role"] == "assistant"]
    for message in assistant:
        for block in message["content"] if isinstance(message["content"], list) else []:
            if block.get("type") == "thinking" and block.get("signature") != signature(
                block.get("thinking", "")
            ):
                return "Invalid `signature` in `thinking` block"
    if (body.get("thinking") or {}).get("type") != "enabled" or not assistant:
        return None
    last = assistant[-1]["content"]
    if isinstance(last, list) and any(b.get("type") == "tool_use" for b in last):
        if last[0].get("type") not in ("thinking", "redacted_thinking"):
            return (
                "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but "
                "found `tool_use`. When `thinking` is enabled, a final `assistant` message "
                "must start with a thinking block (preceeding the lastmost set of `tool_use` "
                "and `tool_result` blocks). To avoid this requirement, disable `thinking`."
            )
    return None


class FakeAnthropic(FakeUpstream):
    """An upstream speaking the Anthropic Messages API, written out by hand here (not
    produced by the gateway's own translators). Scriptable as the OpenAI fake, plus
    ``usage``: the usage object to report (cache reads and writes included), and
    ``redacted``: a redacted thinking block after the thinking. With thinking on it
    thinks first (``THOUGHT``, signed), and it checks the thinking sent back as
    Anthropic does (``_thinking_refusal``)."""

    async def __call__(self, scope, receive, send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        body = orjson.loads(raw) if raw else {}
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if scope["method"] == "GET":
            with self._lock:
                self.probes += 1
            await _send_json(send, self.probe_status, {"data": [], "has_more": False})
            return
        with self._lock:
            self.requests.append({"path": scope["path"], "headers": headers, "json": body})
            behaviour = self.script.popleft() if self.script else {}
        if behaviour.get("delay"):
            await asyncio.sleep(behaviour["delay"])
        status = behaviour.get("status", 200)
        if status >= 400:
            payload = behaviour.get(
                "body", {"type": "error", "error": {"type": "api_error", "message": "boom"}}
            )
            await _send_json(send, status, payload)
            return
        refusal = _thinking_refusal(body)
        if refusal is not None:
            error = {"type": "invalid_request_error", "message": refusal}
            await _send_json(send, 400, {"type": "error", "error": error})
            return
        usage = behaviour.get(
            "usage",
            {
                "input_tokens": 21,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 9,
            },
        )
        tools = body.get("tools") or []
        tool = next((t for t in tools if t.get("type", "custom") == "custom"), None)
        searches = any(t.get("type") == "web_search_20250305" for t in tools)
        last = body["messages"][-1]["content"]
        answered = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
        if searches and not tool:
            content = [*SEARCHED, {"type": "text", "text": "Bonjour from Claude."}]
            stop = "end_turn"
            usage = {**usage, "server_tool_use": {"web_search_requests": 1}}
        elif tool and not answered:
            content = [
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": tool["name"],
                    "input": {"city": "Paris"},
                }
            ]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": "Bonjour from Claude."}]
            stop = "end_turn"
        if (body.get("thinking") or {}).get("type") == "enabled":
            thought = {"type": "thinking", "thinking": THOUGHT, "signature": signature(THOUGHT)}
            redacted = [{"type": "redacted_thinking", "data": "EmwKAhgBEgy3"}]
            content = [thought, *(redacted if behaviour.get("redacted") else []), *content]
        message = {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            await _send_json(send, 200, message)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )

        async def emit(event: dict) -> None:
            data = b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
            await send({"type": "http.response.body", "body": data, "more_body": True})

        # The server tools' counts come with the end of the message, as output does.
        ending = ("output_tokens", "server_tool_use")
        start_usage = {k: v for k, v in usage.items() if k not in ending} | {"output_tokens": 1}
        await emit(
            {
                "type": "message_start",
                "message": {**message, "content": [], "stop_reason": None, "usage": start_usage},
            }
        )
        await emit({"type": "ping"})
        for index, block in enumerate(content):
            if block["type"] == "thinking":
                await emit(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "thinking", "thinking": ""},
                    }
                )
                for piece in ("The user wants", " the weather."):
                    await emit(
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "thinking_delta", "thinking": piece},
                        }
                    )
                await emit(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "signature_delta", "signature": block["signature"]},
                    }
                )
            elif block["type"] in ("redacted_thinking", "web_search_tool_result"):
                await emit({"type": "content_block_start", "index": index, "content_block": block})
            elif block["type"] == "server_tool_use":
                start = {**block, "input": {}}
                await emit({"type": "content_block_start", "index": index, "content_block": start})
                for piece in ('{"query": "weather', ' Paris"}'):
                    await emit(
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        }
                    )
            elif block["type"] == "text":
                await emit(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    }
                )
                for piece in ("Bonjour", " from", " Claude."):
                    if behaviour.get("chunk_delay"):
                        await asyncio.sleep(behaviour["chunk_delay"])
                    await emit(
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": piece},
                        }
                    )
            else:
                await emit(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {**block, "input": {}},
                    }
                )
                for piece in ('{"city"', ': "Paris"}'):
                    await emit(
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        }
                    )
            await emit({"type": "content_block_stop", "index": index})
        if behaviour.get("break_before_end"):
            raise ConnectionAbortedError("scripted break")
        # Cumulative usage: output grows, the final value wins.
        await emit(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 2},
            }
        )
        await emit(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {k: usage[k] for k in ending if k in usage},
            }
        )
        await emit({"type": "message_stop"})
        await send({"type": "http.response.body", "body": b""})
