"""Clients that vanish at any moment leave nothing locked.

Production's shape: granian with two worker processes on PostgreSQL, holds and usage
records group-committed, a Celery worker settling. Clients hang up before their
headers are complete, right after sending the body (while the hold is being
reserved), while the upstream works on a plain answer, and in the middle of a
stream. Afterwards no hold is open, nothing is held, no rate-limit slot is taken,
every hold has exactly one usage record, and the books reconcile.
"""

import asyncio
import random

import httpx
import orjson
import pytest
import redis
from django.conf import settings
from django.db import connection

from accounts.models import Account
from billing.models import Hold
from billing.reconcile import ledger_check
from tests.support.factories import AccountFactory, ApiKeyFactory, ChannelFactory, ModelPriceFactory
from tests.support.procs import Gateway, environment, test_database_url
from tests.support.relay import settle_in_flight
from tests.support.waiting import wait_for
from usage.models import UsageRecord

CREDIT = 50_000_000


@pytest.fixture
def setup(transactional_db, celery_worker_thread, tmp_path):
    group = ModelPriceFactory(model="gpt-4o-mini").group
    account = AccountFactory(price_group=group, credit=CREDIT)
    ChannelFactory(type="mock", base_url="", served_models=["gpt-4o-mini"])
    env = environment(database_url=test_database_url(), redis_url=settings.REDIS_URL)
    gateway = Gateway(env, tmp_path / "gateway.log", server="granian", workers=2).start()
    try:
        yield account, gateway
    finally:
        gateway.stop()
        # The worker may still be settling: the flush after the test must not race it.
        settle_in_flight()


def _request(secret: str, body: dict, request_id: str) -> tuple[bytes, bytes]:
    payload = orjson.dumps(body)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"authorization: Bearer {secret}\r\nx-request-id: {request_id}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
    ).encode()
    return head, payload


async def _vanish(port: int, secret: str, request_id: str, rng: random.Random) -> None:
    """One client that hangs up at a moment chosen by ``rng``."""
    moment = rng.choice(
        ["headers", "hold", "hold", "hold", "hold", "answer", "stream", "stream", "stream"]
    )
    body: dict = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"vanishing {request_id}"}],
        "max_tokens": 50,
    }
    if moment == "answer":
        body["mock"] = {"delay_ms": 40}
    elif moment == "stream":
        body.update(stream=True, mock={"delay_ms": 8})
    head, payload = _request(secret, body, request_id)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if moment == "headers":
            writer.write(head[: rng.randrange(10, len(head) - 4)])
        else:
            writer.write(head + payload)
        await writer.drain()
        if moment == "hold":
            # The hold is reserved within a few milliseconds of the body arriving.
            await asyncio.sleep(rng.uniform(0, 0.004))
        elif moment == "answer":
            await asyncio.sleep(rng.uniform(0.005, 0.035))
        elif moment == "stream":
            await asyncio.wait_for(reader.read(rng.randrange(200, 900)), 5)
            await asyncio.sleep(rng.uniform(0, 0.02))
    finally:
        writer.transport.abort()


async def _crowd(port: int, secret: str, prefix: str, count: int, wave: int, seed: int) -> None:
    rng = random.Random(seed)
    for start in range(0, count, wave):
        await asyncio.gather(
            *(
                _vanish(port, secret, f"{prefix}-{i}", rng)
                for i in range(start, min(count, start + wave))
            )
        )


def _quiet() -> bool:
    return (
        not Hold.objects.filter(status=Hold.Status.OPEN).exists()
        and not UsageRecord.objects.filter(settled_at__isnull=True).exists()
    )


def _assert_nothing_left(account: Account) -> None:
    wait_for(_quiet, timeout=30, interval=0.2)
    account.refresh_from_db()
    assert account.held == 0
    holds = Hold.objects.filter(account=account).count()
    assert holds > 0
    # Every hold ended with exactly one usage record (a record names one hold).
    assert UsageRecord.objects.filter(hold__account=account).count() == holds
    assert ledger_check() == []


def test_vanishing_clients_leave_no_hold_and_no_record_missing(setup):
    account, gateway = setup
    key = ApiKeyFactory(account=account)
    asyncio.run(_crowd(gateway.port, key.secret, "v", count=160, wave=40, seed=16))
    _assert_nothing_left(account)
    # Clients that left before their hold were not charged: only those whose prompt
    # reached the upstream were.
    for record in UsageRecord.objects.filter(api_key=key, status="cancelled"):
        reached = bool(record.attempts)
        assert (record.cost_pico > 0) == reached, (record.request_id, record.attempts)


def test_vanishing_clients_give_back_their_rate_limit_slots(setup):
    account, gateway = setup
    key = ApiKeyFactory(account=account, concurrency_limit=3, rpm_limit=100_000)
    asyncio.run(_crowd(gateway.port, key.secret, "c", count=60, wave=3, seed=17))
    _assert_nothing_left(account)
    broker = redis.Redis.from_url(settings.REDIS_URL)
    assert broker.zcard(f"tg:rl:k{key.id}:conc") == 0

    # The key's three slots are free: three requests at once are all served.
    async def three() -> list[int]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            replies = await asyncio.gather(
                *(
                    client.post(
                        "/v1/chat/completions",
                        headers={"authorization": f"Bearer {key.secret}"},
                        json={
                            "model": "gpt-4o-mini",
                            "messages": [{"role": "user", "content": "hi"}],
                            "mock": {"delay_ms": 200},
                        },
                    )
                    for _ in range(3)
                )
            )
        return [r.status_code for r in replies]

    assert asyncio.run(three()) == [200, 200, 200]


def test_requests_the_server_stops_at_shutdown_end_with_their_record(
    transactional_db, celery_worker_thread, tmp_path
):
    """uvicorn, stopped with requests in flight, cancels them after its grace period;
    each still ends with one usage record saying the server stopped it, and its hold
    is released."""
    group = ModelPriceFactory(model="gpt-4o-mini").group
    account = AccountFactory(price_group=group, credit=CREDIT)
    key = ApiKeyFactory(account=account)
    ChannelFactory(type="mock", base_url="", served_models=["gpt-4o-mini"])
    env = environment(database_url=test_database_url(), redis_url=settings.REDIS_URL)
    gateway = Gateway(env, tmp_path / "gateway.log").start()
    long_reply = " ".join(["word"] * 200)

    async def in_flight() -> None:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            headers = {"authorization": f"Bearer {key.secret}"}
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

            async def plain() -> None:
                await client.post(
                    "/v1/chat/completions",
                    headers={**headers, "x-request-id": "stopped-plain"},
                    json={**body, "mock": {"delay_ms": 20_000}},
                )

            async def streamed() -> None:
                async with client.stream(
                    "POST",
                    "/v1/chat/completions",
                    headers={**headers, "x-request-id": "stopped-stream"},
                    json={**body, "stream": True, "mock": {"delay_ms": 200, "reply": long_reply}},
                ) as response:
                    async for _ in response.aiter_raw():
                        pass

            def both_held() -> None:
                try:
                    wait_for(lambda: Hold.objects.filter(status="open").count() == 2)
                finally:
                    connection.close()  # this thread's own

            tasks = [asyncio.create_task(plain()), asyncio.create_task(streamed())]
            await asyncio.to_thread(both_held)
            await asyncio.to_thread(gateway.stop)
            await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run(in_flight())
    finally:
        gateway.stop()
    wait_for(_quiet, timeout=30, interval=0.2)
    settle_in_flight()
    records = {r.request_id: r for r in UsageRecord.objects.all()}
    assert set(records) == {"stopped-plain", "stopped-stream"}
    for record in records.values():
        assert (record.status, record.error_code) == ("cancelled", "server_shutdown")
    # The stream had delivered part of its answer: that part is charged.
    assert records["stopped-stream"].output_tokens > 0 and records["stopped-stream"].cost_pico > 0
    account.refresh_from_db()
    assert account.held == 0
    assert ledger_check() == []
