"""The Responses API and legacy completions in the tests: ``FakeResponses``, an
OpenAI-compatible upstream over loopback that also speaks them, and the fixtures
that put it (or the Anthropic fake) behind the relay.

``FakeResponses`` answers ``POST /v1/responses`` with the built-in mock's responses
(the same ``mock`` options work), streamed as the Responses API's typed events, and
keeps what it makes, as OpenAI does, for ``GET``/``DELETE /v1/responses/{id}``,
``/input_items``, ``/cancel`` and ``previous_response_id`` (an id it did not make is
its 404, or its 400 for ``previous_response_id``). ``POST /v1/completions`` is
answered like the mock's legacy completions. Every other path is the chat fake's.
Behaviours queued with ``then`` (as for ``FakeUpstream``), for ``/v1/responses``:

- ``status``/``body``/``message``/``delay``: as for the chat fake;
- ``chunk_delay``: seconds before each event; ``break_after``: drop the connection
  after that many events; ``stall_after``: go silent after that many events;
- ``error_after``: send an ``error`` event after that many events and stop;
- ``terminal``: end with this event type instead (``response.failed``), the
  response's status following it;
- ``no_terminal``: end the stream without its last event;
- ``tool_usage``: add this ``tool_usage`` object to the response.

``sent`` holds the exact bytes of each event of the last stream.
"""

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import orjson
import pytest

from relay.dialects.responses import input_items, with_ids
from relay.models import Channel
from relay.providers.mock import responses as mock
from relay.selectors import channel_cache_invalidate
from tests.support.factories import ChannelFactory, ModelPriceFactory
from tests.support.servers import ServerThread
from tests.support.upstreams import FakeUpstream, _send_json
from tests.support.waiting import wait_for
from usage.models import UsageRecord

RESPONSES = "/v1/responses"
COMPLETIONS = "/v1/completions"


def _error(message: str, param: str | None = None, code: str | None = None) -> dict:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


class FakeResponses(FakeUpstream):
    def __init__(self) -> None:
        super().__init__()
        self.kept: dict[str, dict[str, Any]] = {}
        self.sent: list[bytes] = []

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.kept.clear()
            self.sent = []

    def stored_requests(self) -> list[dict[str, Any]]:
        """The requests made to the stored responses' routes."""
        return [r for r in self.requests if r["path"].startswith(f"{RESPONSES}/")]

    async def __call__(self, scope, receive, send) -> None:
        path = scope["path"]
        if path != COMPLETIONS and path != RESPONSES and not path.startswith(f"{RESPONSES}/"):
            await super().__call__(scope, receive, send)
            return
        raw = await _body(receive)
        body = orjson.loads(raw) if raw else {}
        with self._lock:
            self.requests.append(
                {
                    "path": path,
                    "method": scope["method"],
                    "query": scope["query_string"].decode(),
                    "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
                    "json": body,
                }
            )
            behaviour = self.script.popleft() if self.script else {}
        if behaviour.get("delay"):
            await asyncio.sleep(behaviour["delay"])
        status = behaviour.get("status", 200)
        if "body" in behaviour or status >= 400:
            message = behaviour.get("message", "upstream failure")
            await _send_json(send, status, behaviour.get("body", _error(message)))
        elif path == COMPLETIONS:
            await self._completion(body, send)
        elif path == RESPONSES:
            await self._create(body, behaviour, receive, send)
        else:
            await self._stored(scope["method"], path.removeprefix(f"{RESPONSES}/"), send)

    async def _completion(self, body, send) -> None:
        clean = {**body, "mock": {**mock.options(body), "delay_ms": None, "fail_after": None}}
        if not body.get("stream"):
            await _send_json(send, 200, mock.completion(clean))
            return
        await _start_events(send)
        async for chunk in mock.completion_chunks(clean):
            await _more(send, b"data: " + orjson.dumps(chunk) + b"\n\n")
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    async def _create(self, body, behaviour, receive, send) -> None:
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.kept:
            message = f"Previous response with id '{previous}' not found."
            error = _error(message, "previous_response_id", "previous_response_not_found")
            await _send_json(send, 400, error)
            return
        clean = {**body, "mock": {**mock.options(body), "delay_ms": None, "fail_after": None}}
        events = [e async for e in mock.response_events(clean)]
        final = events[-1]
        if behaviour.get("terminal"):
            final["type"] = behaviour["terminal"]
            final["response"]["status"] = behaviour["terminal"].removeprefix("response.")
            final["response"]["error"] = {"code": "server_error", "message": "The model failed."}
        if behaviour.get("tool_usage") is not None:
            final["response"]["tool_usage"] = behaviour["tool_usage"]
        response = final["response"]
        if body.get("store") is not False:
            self.kept[response["id"]] = {
                "response": response,
                "items": with_ids(input_items(body)),
            }
        if not body.get("stream"):
            await _send_json(send, 200, response)
            return
        if behaviour.get("no_terminal"):
            events = events[:-1]
        await self._stream(events, behaviour, receive, send)

    async def _stream(self, events, behaviour, receive, send) -> None:
        gone = asyncio.Event()

        async def watch_disconnect():
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch_disconnect())
        self.sent = []
        await _start_events(send)
        try:
            for number, event in enumerate(events):
                if number == behaviour.get("break_after"):
                    raise ConnectionAbortedError("scripted break")
                if number == behaviour.get("error_after"):
                    error = {"type": "error", "code": "server_error", "message": "overloaded"}
                    error["sequence_number"] = number
                    await _more(send, b"event: error\ndata: " + orjson.dumps(error) + b"\n\n")
                    await send({"type": "http.response.body", "body": b""})
                    return
                pause = 30.0 if number == behaviour.get("stall_after") else 0
                pause = pause or behaviour.get("chunk_delay", 0)
                if pause:
                    try:
                        await asyncio.wait_for(gone.wait(), pause)
                    except TimeoutError:
                        pass
                if gone.is_set():
                    self.streams_cancelled += 1
                    return
                data = b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event)
                self.sent.append(data + b"\n\n")
                await _more(send, data + b"\n\n")
            await send({"type": "http.response.body", "body": b""})
            self.streams_finished += 1
        finally:
            watcher.cancel()
            self.stream_events.set()

    async def _stored(self, method: str, rest: str, send) -> None:
        response_id, _, action = rest.partition("/")
        kept = self.kept.get(response_id)
        if kept is None:
            await _send_json(send, 404, _error(f"Response with id '{response_id}' not found."))
        elif action == "input_items":
            items = kept["items"]
            page = {
                "object": "list",
                "data": items,
                "first_id": items[0]["id"] if items else None,
                "last_id": items[-1]["id"] if items else None,
                "has_more": False,
            }
            await _send_json(send, 200, page)
        elif action == "cancel":
            message = "Only responses created with background mode can be cancelled."
            await _send_json(send, 400, _error(message))
        elif method == "DELETE":
            del self.kept[response_id]
            await _send_json(send, 200, {"id": response_id, "object": "response", "deleted": True})
        else:
            await _send_json(send, 200, kept["response"])


async def _start_events(send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )


async def _more(send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


# A function tool as the Responses API takes it.
WEATHER_FN = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def post(env, body, *, path: str = RESPONSES, key: str | None = None, raw: bytes | None = None):
    headers = {"authorization": f"Bearer {key or env.key.secret}"}
    if raw is not None:
        return env.http.post(path, content=raw, headers=headers)
    return env.http.post(path, json=body, headers=headers)


def stream(env, body, *, path: str = RESPONSES):
    """A streamed request, read as it arrives (``typed_events``)."""
    return env.http.stream(
        "POST",
        path,
        json={**body, "stream": True},
        headers={"authorization": f"Bearer {env.key.secret}"},
    )


def typed_events(response: httpx.Response) -> Iterator[tuple[bytes, dict]]:
    """Each event of a Responses API stream as it arrives: its exact bytes (with the
    blank line that ends it) and its data."""
    buffer = b""
    for chunk in response.iter_raw():
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            kind, data = event.split(b"\n", 1)
            assert kind.startswith(b"event: ") and data.startswith(b"data: "), event
            parsed = orjson.loads(data[6:])
            assert parsed["type"].encode() == kind[7:], event
            yield event + b"\n\n", parsed


def settled(request_id: str) -> UsageRecord:
    """The usage record of a request, once settled."""
    return wait_for(
        lambda: UsageRecord.objects.filter(request_id=request_id, settled_at__isnull=False).first()
    )


def client_for(env, key=None) -> openai.OpenAI:
    """The official client against the live relay, without retries."""
    return openai.OpenAI(
        base_url=f"{env.url}/v1", api_key=key or env.key.secret, max_retries=0, timeout=30
    )


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _responses_server():
    fake = FakeResponses()
    server = ServerThread(fake).start()
    fake.base_url = f"{server.url}/v1"
    yield fake
    server.stop()


@pytest.fixture
def native_upstream(_responses_server):
    """A loopback upstream speaking the Responses API (and legacy completions)."""
    _responses_server.reset()
    return _responses_server


@pytest.fixture
def native_channel(relay_env, native_upstream) -> Channel:
    """``relay_env``'s models served by a channel that speaks the Responses API, in
    place of its chat-only channel."""
    Channel.objects.filter(pk=relay_env.channel.pk).update(status=Channel.Status.DISABLED)
    channel = ChannelFactory(
        name="native",
        base_url=native_upstream.base_url,
        served_models=["gpt-4o-mini", "o4-mini", "gpt-3.5-turbo-instruct"],
        responses_api=True,
        api_key="sk-native-upstream-secret-98765",
    )
    channel_cache_invalidate()
    return channel


@pytest.fixture
def claude_channel(relay_env, anthropic_upstream) -> Channel:
    """``claude-sonnet-4``, priced, served by the Anthropic fake."""
    ModelPriceFactory(
        group=relay_env.group,
        model="claude-sonnet-4",
        input_per_m=Decimal("3.00"),
        output_per_m=Decimal("15.00"),
        cache_read_per_m=Decimal("0.30"),
        cache_write_per_m=Decimal("3.75"),
    )
    channel = ChannelFactory(
        name="anthropic",
        type="anthropic",
        base_url=anthropic_upstream.root_url,
        served_models=["claude-sonnet-4"],
        model_mapping={"claude-sonnet-4": "claude-sonnet-4-20250514"},
        api_key="sk-ant-upstream-secret-42",
    )
    channel_cache_invalidate()
    return channel
