"""A client that stops reading a long stream: the gateway passes the back-pressure on
to the upstream instead of buffering the answer, and when the client hangs up it
closes the upstream connection and bills the tokens it delivered."""

import asyncio
import socket
import threading
import time

import orjson
import pytest

from accounts.models import Account
from billing.pricing import Price, token_components
from billing.reconcile import ledger_check
from core.money import Units
from relay.tokens import count_messages, count_text
from tests.support.factories import AccountFactory, ApiKeyFactory, ChannelFactory, ModelPriceFactory
from tests.support.ledger import charged_for
from tests.support.procs import Gateway, Worker, environment, test_database_url
from tests.support.servers import ServerThread
from tests.support.stalling import chunk
from tests.support.waiting import wait_for
from usage.models import UsageRecord

WORDS = " ".join(f"w{i % 10}" for i in range(300))
EVENT = chunk(WORDS)
CREDIT = 50_000_000
PRICE = Price.of(model="gpt-4o-mini", components=token_components(input="0.15", output="0.60"))
MB = 1024 * 1024


class Flood:
    """An upstream that streams ``max_tokens`` events as fast as it is let."""

    def __init__(self) -> None:
        self.sent = 0
        self.finished = 0
        self.hung_up = threading.Event()

    async def __call__(self, scope, receive, send) -> None:
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        total = orjson.loads(raw)["max_tokens"]
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        try:
            for _ in range(total):
                if gone.is_set():
                    return
                await send({"type": "http.response.body", "body": EVENT, "more_body": True})
                self.sent += 1
                # A send to a closed connection returns at once: let the watcher run.
                await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
            self.finished += 1
        finally:
            watcher.cancel()
            # Left early: the gateway hung up (a send to a closed connection may raise).
            if self.sent < total:
                self.hung_up.set()


def raw_request(port: int, secret: str, body: dict, request_id: str) -> socket.socket:
    """A client socket with a small receive buffer that has sent its request."""
    payload = orjson.dumps(body)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        + f"authorization: Bearer {secret}\r\nx-request-id: {request_id}\r\n".encode()
        + f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def read_at_least(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = sock.recv(65536)
        assert part, "the gateway closed the stream"
        data += part
    return data


def steady(read, settle: float = 1.0, timeout: float = 15.0) -> int:
    """The value once it stopped changing for ``settle`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
        if value != last:
            last, since = value, time.monotonic()
        elif time.monotonic() - since >= settle:
            return value
    raise AssertionError("still growing")


@pytest.fixture
def flood():
    fake = Flood()
    server = ServerThread(fake).start()
    fake.base_url = f"{server.url}/v1"  # type: ignore[attr-defined]
    yield fake
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_client_that_stops_reading_back_pressures_the_upstream_and_is_billed_on_leaving(
    flood, private_redis, tmp_path
):
    group = ModelPriceFactory(model="gpt-4o-mini").group
    account = AccountFactory(price_group=group, credit=CREDIT)
    key = ApiKeyFactory(account=account)
    ChannelFactory(base_url=flood.base_url, served_models=["gpt-4o-mini"])
    env = environment(database_url=test_database_url(), redis_url=private_redis.url)
    gateway = Gateway(env, tmp_path / "gateway.log")
    worker = Worker(env, tmp_path / "worker.log")
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say a lot"}],
        "stream": True,
        "max_tokens": 100_000,  # events, for the flood: ~170 MB if nothing pushed back
    }
    try:
        gateway.start()
        worker.start()
        warm = raw_request(gateway.port, key.secret, {**body, "max_tokens": 50}, "warm-up")
        with warm:
            while not read_at_least(warm, 1).endswith(b"0\r\n\r\n"):
                pass
        baseline = gateway.rss_bytes()

        client = raw_request(gateway.port, key.secret, body, "slow-reader")
        try:
            received = read_at_least(client, 32 * 1024)
            # The client stops reading: the upstream is held back once the buffers
            # between them are full, and the gateway holds none of it in memory.
            plateau = steady(lambda: flood.sent)
            assert plateau * len(EVENT) < 40 * MB
            assert flood.finished == 1  # only the warm-up ran to its end
            assert gateway.rss_bytes() - baseline < 40 * MB
            time.sleep(1.0)
            assert flood.sent == plateau
        finally:
            client.close()

        # Hanging up closes the upstream connection ...
        assert flood.hung_up.wait(5)
        # ... and the stream is billed as cancelled, for the prompt and what was sent.
        record = wait_for(
            lambda: UsageRecord.objects.filter(
                request_id="slow-reader", settled_at__isnull=False
            ).first(),
            timeout=30,
        )
    finally:
        gateway.stop()
        worker.stop()

    assert (record.status, record.estimated) == ("cancelled", True)
    assert record.input_tokens == count_messages(body["messages"])
    per_event = count_text(WORDS)
    events_read = received.count(b"data: ")
    assert per_event * (events_read - 1) <= record.output_tokens <= per_event * plateau
    assert record.cost_pico == PRICE.cost(
        Units(input=record.input_tokens, output=record.output_tokens)
    )
    assert UsageRecord.objects.filter(request_id="slow-reader").count() == 1
    account = Account.objects.get(pk=account.pk)
    charged = charged_for(account)
    assert (account.balance, account.held) == (CREDIT - charged, 0)
    assert ledger_check() == []
