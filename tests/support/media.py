"""Loopback upstreams for the media endpoints, and the files the tests upload.

``FakeMedia`` speaks OpenAI's wire formats for images, audio and moderations and
Jina's for ``/rerank``; ``FakeCohere`` speaks Cohere's v2 rerank. Both are written
out by hand here from the providers' API references (not produced by the gateway's
own code), and scriptable like ``FakeUpstream`` (``then(**behaviour)`` for the next
request):

- ``status``/``message``/``body``: answer with that status and JSON body instead;
- ``delay``: seconds before answering;
- ``usage``: the usage object to report (None: none; the default reports none, so
  the gateway bills from the request);
- ``images``: how many images to return, whatever ``n`` asked for;
- ``size``/``quality``: what a GPT image answer says it chose;
- ``chunk_delay``: seconds before each streamed chunk or event;
- ``break_after``: drop the connection after that many chunks or events.
- ``whole``: answer a streamed transcription in one piece, as whisper-1 does;
- ``text``: the transcript.

Each request is kept as ``{"path", "headers", "json"}`` or, for a form,
``{"path", "headers", "form", "files"}`` with the files as ``(filename,
content_type, size)``.

The files: ``wav(seconds)`` and ``mp3(seconds)`` of silence of that length (the
standard library's ``wave``; MPEG frames of silence), ``png()``, ``jpeg_bytes()``.
"""

import asyncio
import base64
import collections
import io
import struct
import threading
import wave
import zlib
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import httpx
import openai
import orjson

from accounts.models import Account, ApiKey
from billing.models import Entry, Hold, PriceGroup
from relay.models import Channel
from tests.support.waiting import wait_for
from usage.models import UsageRecord

# -- files ---------------------------------------------------------------------------------


def wav(seconds: float, rate: int = 8000) -> bytes:
    """A WAV file of ``seconds`` of silence (16-bit mono)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"\x00\x00" * round(seconds * rate))
    return out.getvalue()


# MPEG-1 Layer III, 128 kbit/s, 48 kHz: 384 bytes per frame of 1,152 samples (24 ms).
_MP3_FRAME = b"\xff\xfb\x94\x64" + bytes(380)


def mp3(seconds: float) -> bytes:
    """An MP3 file of ``seconds`` of silence (whole frames of 24 ms)."""
    return _MP3_FRAME * round(seconds / 0.024)


def png(side: int = 4) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    rows = (b"\x00" + b"\x10\x80\xf0" * side) * side
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def jpeg_bytes() -> bytes:
    """The leading bytes of a JPEG file (enough for a format check)."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(64)


PNG_B64 = base64.b64encode(png()).decode()
# What the fake's speech is made of: MP3 frames, 20 chunks of 2 KB.
SPEECH_CHUNK = _MP3_FRAME * 5
SPEECH_CHUNKS = 20
SPEECH_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


# -- the upstreams -------------------------------------------------------------------------


def _form(content_type: str, raw: bytes) -> tuple[dict[str, Any], dict[str, list]]:
    """A multipart body read with the standard library's MIME parser."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    fields: dict[str, Any] = {}
    files: dict[str, list] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files.setdefault(name, []).append(
                (part.get_filename(), part.get_content_type(), len(payload))
            )
        elif name in fields:
            previous = fields[name]
            earlier = previous if isinstance(previous, list) else [previous]
            fields[name] = [*earlier, payload.decode()]
        else:
            fields[name] = payload.decode()
    return fields, files


async def _read(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _json(send, payload: dict[str, Any], status: int = 200) -> None:
    await _answer(send, status, orjson.dumps(payload), "application/json")


class _Scripted:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: collections.deque[dict[str, Any]] = collections.deque()
        self.streams_cancelled = 0
        self.probes = 0
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.script.clear()
            self.streams_cancelled = 0
            self.probes = 0

    def then(self, **behaviour: Any) -> "_Scripted":
        self.script.append(behaviour)
        return self

    @property
    def calls(self) -> int:
        return len(self.requests)

    def _take(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(request)
            return self.script.popleft() if self.script else {}

    async def _stream(
        self, send, receive, content_type: str, chunks: list[bytes], behaviour: dict[str, Any]
    ) -> None:
        """Chunks as they are sent, until the client leaves or the script breaks it."""
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
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        try:
            for sent, chunk in enumerate(chunks):
                if sent == behaviour.get("break_after"):
                    raise ConnectionAbortedError("scripted break")
                if behaviour.get("chunk_delay"):
                    try:
                        await asyncio.wait_for(gone.wait(), behaviour["chunk_delay"])
                    except TimeoutError:
                        pass
                if gone.is_set():
                    self.streams_cancelled += 1
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


class FakeMedia(_Scripted):
    """OpenAI's images, audio and moderations, and Jina's rerank, over loopback."""

    async def __call__(self, scope, receive, send) -> None:
        assert scope["type"] == "http"
        raw = await _read(receive)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if scope["method"] == "GET":
            self.probes += 1
            await _answer(send, 200, b'{"object": "list", "data": []}', "application/json")
            return
        path = scope["path"].removeprefix("/v1")
        request: dict[str, Any] = {"path": path, "headers": headers}
        content_type = headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            request["form"], request["files"] = _form(content_type, raw)
            body = request["form"]
        else:
            request["json"] = body = orjson.loads(raw)
        behaviour = self._take(request)
        if behaviour.get("delay"):
            await asyncio.sleep(behaviour["delay"])
        status = behaviour.get("status", 200)
        if status >= 400 or "body" in behaviour:
            payload = behaviour.get(
                "body",
                {"error": {"message": behaviour.get("message", "upstream failure"), "type": "x"}},
            )
            await _json(send, payload, status)
            return
        if path in ("/images/generations", "/images/edits"):
            await _json(send, self._images(body, behaviour))
        elif path in ("/audio/transcriptions", "/audio/translations"):
            await self._transcript(send, receive, body, behaviour)
        elif path == "/audio/speech":
            await self._speech(send, receive, body, behaviour)
        elif path == "/rerank":
            await _json(send, self._rerank(body, behaviour))
        elif path == "/moderations":
            await _json(send, self._moderation(body))
        else:
            await _answer(send, 404, b'{"error": {"message": "no such path"}}', "application/json")

    @staticmethod
    def _images(body: dict[str, Any], behaviour: dict[str, Any]) -> dict[str, Any]:
        n = int(body.get("n") or 1)
        count = behaviour.get("images", n)
        if body.get("response_format") == "url":
            data = [{"url": f"https://images.example/{i}.png"} for i in range(count)]
        else:
            data = [{"b64_json": PNG_B64} for _ in range(count)]
        answer: dict[str, Any] = {"created": 1_700_000_000, "data": data}
        for name in ("size", "quality"):
            if name in behaviour:
                answer[name] = behaviour[name]
        if behaviour.get("usage") is not None:
            answer["usage"] = behaviour["usage"]
        return answer

    async def _transcript(self, send, receive, body, behaviour) -> None:
        text = behaviour.get("text", "The quick brown fox jumps over the lazy dog.")
        usage = behaviour.get("usage")
        if body.get("stream") == "true" and not behaviour.get("whole"):
            events = [
                {"type": "transcript.text.delta", "delta": word + " "} for word in text.split()
            ]
            done: dict[str, Any] = {"type": "transcript.text.done", "text": text}
            if usage is not None:
                done["usage"] = usage
            chunks = [_sse(e) for e in [*events, done]]
            await self._stream(send, receive, "text/event-stream", chunks, behaviour)
            return
        kind = body.get("response_format") or "json"
        if kind == "text":
            await _answer(send, 200, f"{text}\n".encode(), "text/plain; charset=utf-8")
        elif kind == "srt":
            srt = f"1\n00:00:00,000 --> 00:00:02,500\n{text}\n\n"
            await _answer(send, 200, srt.encode(), "text/plain; charset=utf-8")
        elif kind == "vtt":
            vtt = f"WEBVTT\n\n00:00:00.000 --> 00:00:02.500\n{text}\n\n"
            await _answer(send, 200, vtt.encode(), "text/plain; charset=utf-8")
        else:
            answer: dict[str, Any] = {"text": text}
            if kind == "verbose_json":
                answer.update(task="transcribe", language="english", duration=2.5, segments=[])
            if usage is not None:
                answer["usage"] = usage
            await _json(send, answer)

    async def _speech(self, send, receive, body, behaviour) -> None:
        if body.get("stream_format") == "sse":
            events = [
                {"type": "speech.audio.delta", "audio": base64.b64encode(SPEECH_CHUNK).decode()}
                for _ in range(SPEECH_CHUNKS)
            ]
            done: dict[str, Any] = {"type": "speech.audio.done"}
            if behaviour.get("usage") is not None:
                done["usage"] = behaviour["usage"]
            chunks = [_sse(e) for e in [*events, done]]
            await self._stream(send, receive, "text/event-stream", chunks, behaviour)
            return
        content_type = SPEECH_TYPES[body.get("response_format") or "mp3"]
        chunks = [SPEECH_CHUNK] * SPEECH_CHUNKS
        await self._stream(send, receive, content_type, chunks, behaviour)

    @staticmethod
    def _rerank(body: dict[str, Any], behaviour: dict[str, Any]) -> dict[str, Any]:
        documents = body["documents"]
        results = [
            {
                "index": i,
                "relevance_score": round(1 - i / len(documents), 4),
                "document": {"text": d if isinstance(d, str) else d["text"]},
            }
            for i, d in enumerate(documents)
        ]
        if body.get("return_documents") is False:
            for result in results:
                del result["document"]
        if body.get("top_n"):
            results = results[: body["top_n"]]
        answer = {"model": body["model"], "results": results}
        usage = behaviour.get("usage", {"total_tokens": 10 * len(documents)})
        if usage is not None:
            answer["usage"] = usage
        return answer

    @staticmethod
    def _moderation(body: dict[str, Any]) -> dict[str, Any]:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        categories = ("harassment", "hate", "sexual", "violence", "self-harm")
        result = {
            "flagged": False,
            "categories": dict.fromkeys(categories, False),
            "category_scores": dict.fromkeys(categories, 0.001),
            "category_applied_input_types": {c: ["text"] for c in categories},
        }
        return {"id": "modr-1", "model": body["model"], "results": [result] * len(inputs)}


class FakeCohere(_Scripted):
    """Cohere's v2 rerank (``POST /v2/rerank``, Bearer key): documents must be strings,
    fields it does not know are refused, results carry no documents, and the answer
    reports its search units."""

    async def __call__(self, scope, receive, send) -> None:
        assert scope["type"] == "http"
        raw = await _read(receive)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if scope["method"] == "GET":
            self.probes += 1
            await _answer(send, 200, b'{"models": []}', "application/json")
            return
        body = orjson.loads(raw)
        behaviour = self._take({"path": scope["path"], "headers": headers, "json": body})
        status = behaviour.get("status", 200)
        if status >= 400:
            message = behaviour.get("message", "internal error")
            await _json(send, {"message": message}, status)
            return
        if scope["path"] != "/v2/rerank" or not headers.get("authorization", "").startswith(
            "Bearer "
        ):
            await _answer(send, 404, b'{"message": "not found"}', "application/json")
            return
        known = {"model", "query", "documents", "top_n", "max_tokens_per_doc"}
        documents = body.get("documents")
        if set(body) - known or not all(isinstance(d, str) for d in documents or [None]):
            message = "invalid request: documents must be strings; unknown fields are refused"
            await _json(send, {"message": message}, 400)
            return
        results = [
            {"index": i, "relevance_score": round(1 - i / len(documents), 4)}
            for i in range(len(documents))
        ]
        if body.get("top_n"):
            results = results[: body["top_n"]]
        answer = {
            "id": "07734bd2-2473-4f07-94e1-0d9f0e6843cf",
            "results": results,
            "meta": {
                "api_version": {"version": "2", "is_experimental": False},
                "billed_units": {"search_units": -(-len(documents) // 100)},
            },
        }
        await _json(send, answer)


# -- the environment ---------------------------------------------------------------------------

# The media models priced in the test group: real list prices.
MEDIA_PRICES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "dall-e-3": (
        "image_generation",
        [
            {"unit": "image", "rate": "0.04", "size": "1024x1024", "quality": "standard"},
            {"unit": "image", "rate": "0.08", "size": "1792x1024", "quality": "standard"},
            {"unit": "image", "rate": "0.08", "size": "1024x1792", "quality": "standard"},
            {"unit": "image", "rate": "0.08", "size": "1024x1024", "quality": "hd"},
            {"unit": "image", "rate": "0.12", "size": "1792x1024", "quality": "hd"},
            {"unit": "image", "rate": "0.12", "size": "1024x1792", "quality": "hd"},
        ],
    ),
    "gpt-image-1": (
        "image_generation",
        [
            {"unit": "input", "rate": "5.00"},
            {"unit": "image_input", "rate": "10.00"},
            {"unit": "image_output", "rate": "40.00"},
        ],
    ),
    "gpt-image-1-mini": (
        "image_generation",
        [
            {"unit": "image", "rate": "0.005", "size": "1024x1024", "quality": "low"},
            {"unit": "image", "rate": "0.011", "size": "1024x1024", "quality": "medium"},
            {"unit": "image", "rate": "0.036", "size": "1024x1024", "quality": "high"},
            {"unit": "image", "rate": "0.052", "size": "1536x1024", "quality": "high"},
        ],
    ),
    "whisper-1": ("audio_transcription", [{"unit": "audio_second", "rate": "0.0001"}]),
    "gpt-4o-mini-transcribe": (
        "audio_transcription",
        [
            {"unit": "input", "rate": "1.25"},
            {"unit": "audio_input", "rate": "3.00"},
            {"unit": "output", "rate": "5.00"},
        ],
    ),
    "tts-1": ("audio_speech", [{"unit": "character", "rate": "15.00"}]),
    "gpt-4o-mini-tts": (
        "audio_speech",
        [{"unit": "input", "rate": "0.60"}, {"unit": "audio_output", "rate": "12.00"}],
    ),
    "rerank-v3.5": ("rerank", [{"unit": "search_unit", "rate": "0.002"}]),
    "jina-reranker-v2": ("rerank", [{"unit": "input", "rate": "0.02"}]),
    "omni-moderation-latest": ("moderation", [{"unit": "request", "rate": "0"}]),
}


@dataclass
class MediaEnv:
    """The relay with the media models priced, served by ``upstream`` (a FakeMedia
    channel of type openai) and, for ``rerank-v3.5``, also by ``cohere`` when a test
    adds that channel; ``client`` is the official OpenAI client on the key."""

    group: PriceGroup
    account: Account
    key: ApiKey
    channel: Channel
    upstream: FakeMedia
    cohere: FakeCohere
    url: str
    http: httpx.Client
    client: openai.OpenAI

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.key.secret}", **kwargs.pop("headers", {})}
        return self.http.post(path, headers=headers, **kwargs)

    def refresh(self) -> Account:
        self.account.refresh_from_db()
        return self.account


def settled(request_id: str) -> UsageRecord:
    """The request's usage record, once settled."""
    return wait_for(
        lambda: UsageRecord.objects.filter(request_id=request_id, settled_at__isnull=False).first()
    )


@dataclass(frozen=True)
class Money:
    balance: int
    held: int
    entries: int
    holds: int


def money(env: MediaEnv) -> Money:
    """What a refused request must leave as it was."""
    account = env.refresh()
    return Money(account.balance, account.held, Entry.objects.count(), Hold.objects.count())
