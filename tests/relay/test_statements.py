"""The hot path's database work: two statements per relayed request on PostgreSQL,
the hold and the usage record, whatever the endpoint, streamed or not, once the
process's caches are warm. A third statement on every request would show here
before it shows in the benchmark."""

import asyncio

import httpx

from relay.lifecycle import endings_settled
from relay.providers.client import close_sessions
from tests.support.factories import ChannelFactory, ModelPriceFactory
from tests.support.media import MEDIA_PRICES, png, wav
from tests.support.statements import statements
from usage.models import UsageRecord

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
MESSAGES = {
    "model": "gpt-4o-mini",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "Hi"}],
}
REQUESTS = [
    ("/v1/chat/completions", CHAT),
    ("/v1/chat/completions", {**CHAT, "stream": True}),
    ("/v1/messages", MESSAGES),
    ("/v1/messages", {**MESSAGES, "stream": True}),
    ("/v1/embeddings", {"model": "gpt-4o-mini", "input": "Hi"}),
]


def test_a_relayed_request_makes_two_database_statements(relay_env):
    from config.asgi import application
    from core import adb, invalidation

    async def relay() -> list[list[str]]:
        transport = httpx.ASGITransport(app=application)
        headers = {"authorization": f"Bearer {relay_env.key.secret}"}
        seen = []
        async with httpx.AsyncClient(transport=transport, base_url="http://tollgate") as http:
            try:
                # The first requests fill this process's caches (key, prices, channels);
                # the caches start over once the process listens for invalidations.
                for _ in range(2):
                    warm = await http.post("/v1/chat/completions", json=CHAT, headers=headers)
                    assert warm.status_code == 200
                    await endings_settled(10)
                    assert await asyncio.to_thread(invalidation.subscribed.wait, 10)
                for path, body in REQUESTS:
                    with statements() as sql:
                        response = await http.post(path, json=body, headers=headers)
                        assert response.status_code == 200, response.text
                        await endings_settled(10)
                    seen.append(sql)
            finally:
                await close_sessions()
                await adb.close()
        return seen

    seen = asyncio.run(relay())
    assert [len(sql) for sql in seen] == [2] * len(REQUESTS), seen
    for sql in seen:
        assert "hold" in sql[0].lower() and "usage" in sql[1].lower()
    # Every request was served and recorded.
    assert UsageRecord.objects.filter(status="success").count() == len(REQUESTS) + 2


# The media endpoints, served by the built-in mock: (path, JSON body or form fields, files).
MEDIA_REQUESTS: list[tuple[str, dict, dict | None]] = [
    ("/v1/images/generations", {"model": "dall-e-3", "prompt": "A cat"}, None),
    (
        "/v1/images/edits",
        {"model": "dall-e-3", "prompt": "A hat"},
        {"image": ("a.png", png(), "image/png")},
    ),
    ("/v1/audio/transcriptions", {"model": "whisper-1"}, {"file": ("a.wav", wav(2))}),
    (
        "/v1/audio/transcriptions",
        {"model": "whisper-1", "response_format": "text"},
        {"file": ("a.wav", wav(2))},
    ),
    (
        "/v1/audio/transcriptions",
        {"model": "whisper-1", "stream": "true"},
        {"file": ("a.wav", wav(2))},
    ),
    ("/v1/audio/translations", {"model": "whisper-1"}, {"file": ("a.wav", wav(2))}),
    ("/v1/audio/speech", {"model": "tts-1", "voice": "alloy", "input": "Hi"}, None),
    ("/v1/rerank", {"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"]}, None),
    ("/v1/moderations", {"input": "Hi"}, None),
]


def test_a_media_request_makes_two_database_statements(relay_env):
    from config.asgi import application
    from core import adb, invalidation

    for model, (mode, components) in MEDIA_PRICES.items():
        ModelPriceFactory(group=relay_env.group, model=model, components=components, mode=mode)
    ChannelFactory(type="mock", base_url="", served_models=sorted(MEDIA_PRICES))

    async def relay() -> list[list[str]]:
        transport = httpx.ASGITransport(app=application)
        headers = {"authorization": f"Bearer {relay_env.key.secret}"}
        seen = []
        async with httpx.AsyncClient(transport=transport, base_url="http://tollgate") as http:
            try:
                for _ in range(2):
                    warm = await http.post("/v1/moderations", json={"input": "x"}, headers=headers)
                    assert warm.status_code == 200
                    await endings_settled(10)
                    assert await asyncio.to_thread(invalidation.subscribed.wait, 10)
                for path, fields, files in MEDIA_REQUESTS:
                    with statements() as sql:
                        if files is None:
                            response = await http.post(path, json=fields, headers=headers)
                        else:
                            response = await http.post(
                                path, data=fields, files=files, headers=headers
                            )
                        assert response.status_code == 200, response.text
                        await endings_settled(10)
                    seen.append(sql)
            finally:
                await close_sessions()
                await adb.close()
        return seen

    seen = asyncio.run(relay())
    assert [len(sql) for sql in seen] == [2] * len(MEDIA_REQUESTS), seen
    recorded = UsageRecord.objects.filter(status="success").exclude(endpoint="moderations")
    assert recorded.count() == len(MEDIA_REQUESTS) - 1
