"""The built-in mock's media answers, in OpenAI's wire formats (and Jina's for rerank),
answered in this process like the rest of the mock.

- images: a small valid PNG per image asked for, as ``b64_json`` or a data URL in
  ``url``; GPT image models report the size and quality they chose and their tokens;
- transcriptions and translations: a transcript of the upload's duration in every
  ``response_format`` (json with its usage, verbose_json with segments, text, srt,
  vtt), streamed as ``transcript.text.delta`` events and ``transcript.text.done``;
- speech: a short valid MP3, WAV or raw PCM of silence as long as the input takes to
  say, in chunks (``speech.audio.delta`` events with ``stream_format: "sse"``);
- rerank: the documents scored by the words they share with the query;
- moderations: a result per input, flagging violent words.

The ``mock`` options apply: ``reply`` (the transcript), ``delay_ms`` (before an
answer, and before each streamed chunk), ``usage: false``, ``fail_after`` (chunks
before a stream breaks) and ``status``. In a form, ``mock`` is a JSON text field.
"""

import asyncio
import base64
import hashlib
import io
import math
import struct
import time
import uuid
import wave
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ...dialects import (
    IMAGE_EDITS,
    IMAGE_GENERATIONS,
    MODERATIONS,
    RERANK,
    SPEECH,
    TRANSCRIPTIONS,
    TRANSLATIONS,
)
from ...dialects.audio import AUDIO_TOKENS_PER_SECOND, duration_ms
from ...dialects.base import StreamEvent
from ...dialects.media import sniffed, uploads_of
from ...dialects.multipart import Upload
from ...dialects.rerank import document_text
from ...tokens import count_text
from ..base import Call, UpstreamStream, UpstreamStreamError
from ..openai.media import Wire
from .upstream import MockRequestInvalid

# -- images ------------------------------------------------------------------------------

# GPT Image 1's output tokens per image, by quality and size (OpenAI's table).
GPT_IMAGE_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
# Input tokens the mock counts per image given to an edit.
INPUT_IMAGE_TOKENS = 323


def png(seed: bytes, side: int = 8) -> bytes:
    """A ``side`` x ``side`` PNG of one colour (from ``seed``)."""
    row = b"\x00" + bytes(seed[:3]) * side

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * side))
        + chunk(b"IEND", b"")
    )


def _whole(value: Any, default: int) -> int:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def image(body: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    model = str(body.get("model") or "")
    prompt = str(body.get("prompt") or "")
    n = _whole(body.get("n"), 1)
    gpt = model.startswith(("gpt-image", "chatgpt-image"))
    # GPT image models always answer in base64; DALL·E by URL unless asked otherwise.
    as_url = not gpt and body.get("response_format") != "b64_json"
    data = []
    for i in range(n):
        picture = base64.b64encode(png(hashlib.sha256(f"{prompt}/{i}".encode()).digest()))
        text = picture.decode()
        item: dict[str, Any] = (
            {"url": f"data:image/png;base64,{text}"} if as_url else {"b64_json": text}
        )
        if model.startswith("dall-e-3"):
            item["revised_prompt"] = prompt
        data.append(item)
    answer: dict[str, Any] = {"created": int(time.time()), "data": data}
    if not gpt:
        return answer
    size = body.get("size") if body.get("size") not in (None, "auto") else "1024x1024"
    quality = body.get("quality") if body.get("quality") not in (None, "auto") else "medium"
    answer.update(size=size, quality=quality, output_format="png", background="opaque")
    if opts.get("usage") is not False:
        text_tokens = count_text(prompt)
        image_tokens = INPUT_IMAGE_TOKENS * len(uploads_of(body, "image"))
        per_image = GPT_IMAGE_TOKENS.get(str(quality), GPT_IMAGE_TOKENS["high"])
        output = per_image.get(str(size), per_image["1024x1024"]) * n
        answer["usage"] = {
            "input_tokens": text_tokens + image_tokens,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
            "output_tokens": output,
            "total_tokens": text_tokens + image_tokens + output,
        }
    return answer


# -- transcripts ---------------------------------------------------------------------------


def _seconds(body: dict[str, Any]) -> float:
    upload = body.get("file")
    assert isinstance(upload, Upload)
    return duration_ms(upload, sniffed(upload.data) or "") / 1000


def _transcript_text(opts: dict[str, Any], seconds: float, task: str) -> str:
    if isinstance(opts.get("reply"), str):
        return opts["reply"]
    what = "translation" if task == "translate" else "transcript"
    return f"This is the Tollgate mock {what} of {seconds:g} seconds of audio."


def _transcript_usage(
    body: dict[str, Any], opts: dict[str, Any], seconds: float, text: str
) -> dict[str, Any] | None:
    """What OpenAI reports: tokens for the GPT transcribe models, whole seconds for
    the others (whisper-1)."""
    if opts.get("usage") is False:
        return None
    if "transcribe" not in str(body.get("model")):
        return {"type": "duration", "seconds": math.ceil(seconds)}
    prompt = count_text(str(body.get("prompt") or ""))
    audio = math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)
    output = count_text(text)
    return {
        "type": "tokens",
        "input_tokens": prompt + audio,
        "input_token_details": {"text_tokens": prompt, "audio_tokens": audio},
        "output_tokens": output,
        "total_tokens": prompt + audio + output,
    }


def _cues(text: str, seconds: float) -> list[tuple[float, float, str]]:
    """The transcript in up to three cues spread over the audio."""
    words = text.split()
    count = max(1, min(3, len(words)))
    step = seconds / count
    size = -(-len(words) // count)
    return [
        (i * step, (i + 1) * step, " ".join(words[i * size : (i + 1) * size])) for i in range(count)
    ]


def _timestamp(seconds: float, separator: str) -> str:
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    whole, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{ms:03d}"


def transcript(body: dict[str, Any], opts: dict[str, Any], task: str) -> Wire:
    seconds = _seconds(body)
    text = _transcript_text(opts, seconds, task)
    usage = _transcript_usage(body, opts, seconds, text) if task == "transcribe" else None
    kind = body.get("response_format") or "json"
    cues = _cues(text, seconds)
    if kind == "text":
        return Wire(data={}, raw=f"{text}\n".encode(), content_type="text/plain; charset=utf-8")
    if kind in ("srt", "vtt"):
        separator = "," if kind == "srt" else "."
        lines = [] if kind == "srt" else ["WEBVTT", ""]
        for i, (start, end, words) in enumerate(cues, 1):
            if kind == "srt":
                lines.append(str(i))
            lines += [
                f"{_timestamp(start, separator)} --> {_timestamp(end, separator)}",
                words,
                "",
            ]
        return Wire(
            data={}, raw="\n".join(lines).encode(), content_type="text/plain; charset=utf-8"
        )
    answer: dict[str, Any] = {"text": text}
    if kind == "verbose_json":
        answer = {
            "task": task,
            "language": "english",
            "duration": seconds,
            "text": text,
            "segments": [
                {
                    "id": i,
                    "seek": 0,
                    "start": start,
                    "end": end,
                    "text": words,
                    "tokens": [],
                    "temperature": 0.0,
                    "avg_logprob": -0.2,
                    "compression_ratio": 1.0,
                    "no_speech_prob": 0.01,
                }
                for i, (start, end, words) in enumerate(cues)
            ],
        }
    elif kind == "diarized_json":
        answer = {
            "task": task,
            "duration": seconds,
            "text": text,
            "segments": [
                {
                    "type": "transcript.text.segment",
                    "id": f"seg_{i}",
                    "start": start,
                    "end": end,
                    "text": words,
                    "speaker": "A",
                }
                for i, (start, end, words) in enumerate(cues)
            ],
        }
    if usage is not None:
        answer["usage"] = usage
    return Wire(data=answer)


def transcript_events(body: dict[str, Any], opts: dict[str, Any]) -> list[dict[str, Any]]:
    seconds = _seconds(body)
    text = _transcript_text(opts, seconds, "transcribe")
    words = text.split(" ")
    events: list[dict[str, Any]] = [
        {"type": "transcript.text.delta", "delta": word if i == 0 else " " + word}
        for i, word in enumerate(words)
    ]
    done: dict[str, Any] = {"type": "transcript.text.done", "text": text}
    usage = _transcript_usage(body, opts, seconds, text)
    if usage is not None:
        done["usage"] = usage
    return [*events, done]


# -- speech -------------------------------------------------------------------------------

SAMPLE_RATE = 24_000
# How fast the mock speaks, and the longest it speaks for.
CHARACTERS_PER_SECOND = 15
MAX_SPEECH_SECONDS = 10.0
# One MPEG-2 Layer III frame: 32 kbit/s, 24 kHz, mono, 576 samples (24 ms) of silence.
MP3_FRAME = b"\xff\xf3\x44\xc0" + bytes(92)
MP3_FRAME_SECONDS = 0.024
# Audio output tokens per second of speech (one per 50 ms, as OpenAI counts them).
SPEECH_TOKENS_PER_SECOND = 20


def speech_seconds(text: str) -> float:
    return min(MAX_SPEECH_SECONDS, max(0.5, len(text) / CHARACTERS_PER_SECOND))


def speech_chunks(body: dict[str, Any]) -> list[bytes]:
    """The audio of the speech, in chunks of about a quarter of a second."""
    kind = body.get("response_format") or "mp3"
    seconds = speech_seconds(str(body.get("input") or ""))
    if kind == "mp3":
        frames = round(seconds / MP3_FRAME_SECONDS)
        return [MP3_FRAME * min(10, frames - i) for i in range(0, frames, 10)]
    if kind not in ("wav", "pcm"):
        raise MockRequestInvalid(
            "The mock upstream speaks mp3, wav and pcm only.", "response_format"
        )
    samples = bytes(2 * round(seconds * SAMPLE_RATE))
    if kind == "wav":
        out = io.BytesIO()
        with wave.open(out, "wb") as audio:
            audio.setnchannels(1)
            audio.setsampwidth(2)
            audio.setframerate(SAMPLE_RATE)
            audio.writeframes(samples)
        samples = out.getvalue()
    step = SAMPLE_RATE // 2
    return [samples[i : i + step] for i in range(0, len(samples), step)]


def speech_events(body: dict[str, Any], opts: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}
        for chunk in speech_chunks(body)
    ]
    done: dict[str, Any] = {"type": "speech.audio.done"}
    if opts.get("usage") is not False:
        text = count_text(str(body.get("input") or ""))
        audio = math.ceil(speech_seconds(str(body.get("input") or "")) * SPEECH_TOKENS_PER_SECOND)
        done["usage"] = {"input_tokens": text, "output_tokens": audio, "total_tokens": text + audio}
    return [*events, done]


# -- rerank and moderations -------------------------------------------------------------------


def _words(text: str) -> set[str]:
    return {w.strip(".,;:!?\"'()").lower() for w in text.split()} - {""}


def rerank(body: dict[str, Any]) -> dict[str, Any]:
    """Jina's answer shape: documents by the share of the query's words they hold."""
    query = _words(str(body.get("query") or ""))
    documents = body.get("documents") or []
    tokens = 0
    scored = []
    for index, document in enumerate(documents):
        text = document_text(document)
        tokens += count_text(str(body.get("query") or "")) + count_text(text)
        shared = len(query & _words(text)) / len(query) if query else 0.0
        # Earlier documents win ties, as a stable sort keeps them.
        scored.append((round(0.05 + 0.9 * shared, 6), index, text))
    scored.sort(key=lambda s: (-s[0], s[1]))
    top_n = body.get("top_n")
    if isinstance(top_n, int):
        scored = scored[:top_n]
    returning = body.get("return_documents") is not False
    results = []
    for score, index, text in scored:
        result: dict[str, Any] = {"index": index, "relevance_score": score}
        if returning:
            result["document"] = {"text": text}
        results.append(result)
    return {
        "id": f"rerank-mock{uuid.uuid4().hex[:20]}",
        "model": body.get("model"),
        "results": results,
        "usage": {"total_tokens": tokens},
    }


CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
# The categories OpenAI also judges images for.
IMAGE_CATEGORIES = frozenset(
    {
        "self-harm",
        "self-harm/intent",
        "self-harm/instructions",
        "sexual",
        "violence",
        "violence/graphic",
    }
)
VIOLENT_WORDS = frozenset({"kill", "attack", "murder", "shoot"})


def _moderation(text: str, images: bool) -> dict[str, Any]:
    violent = bool(_words(text) & VIOLENT_WORDS)
    scores = {c: 0.0001 for c in CATEGORIES}
    if violent:
        scores["violence"] = 0.92
    return {
        "flagged": violent,
        "categories": {c: scores[c] > 0.5 for c in CATEGORIES},
        "category_scores": scores,
        "category_applied_input_types": {
            c: ["text", "image"] if images and c in IMAGE_CATEGORIES else ["text"]
            for c in CATEGORIES
        },
    }


def moderation(body: dict[str, Any]) -> dict[str, Any]:
    """One result per string; an array of parts is one input, its text and images
    judged together."""
    value = body.get("input")
    if isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
        text = " ".join(str(p.get("text") or "") for p in value if isinstance(p, dict))
        images = any(isinstance(p, dict) and p.get("type") == "image_url" for p in value)
        results = [_moderation(text, images)]
    else:
        texts = value if isinstance(value, list) else [value]
        results = [_moderation(str(t), False) for t in texts]
    return {
        "id": f"modr-mock{uuid.uuid4().hex[:20]}",
        "model": body.get("model"),
        "results": results,
    }


# -- the transport ---------------------------------------------------------------------------


def scripted(body: dict[str, Any]) -> dict[str, Any]:
    """The body with its ``mock`` options as an object (a form sends them as JSON)."""
    opts = body.get("mock")
    if not isinstance(opts, str):
        return body
    try:
        return {**body, "mock": orjson.loads(opts)}
    except orjson.JSONDecodeError:
        raise MockRequestInvalid("`mock` must be a JSON object of mock options.", "mock") from None


async def fetch(call: Call, opts: dict[str, Any]) -> Wire:
    """A whole answer."""
    if opts.get("delay_ms"):
        await asyncio.sleep(opts["delay_ms"] / 1000)
    body, dialect = call.body, call.dialect
    if dialect in (IMAGE_GENERATIONS.name, IMAGE_EDITS.name):
        return Wire(data=image(body, opts))
    if dialect == TRANSCRIPTIONS.name:
        return transcript(body, opts, "transcribe")
    if dialect == TRANSLATIONS.name:
        return transcript(body, opts, "translate")
    if dialect == RERANK.name:
        return Wire(data=rerank(body))
    assert dialect == MODERATIONS.name
    return Wire(data=moderation(body))


def open_stream(call: Call, opts: dict[str, Any]) -> UpstreamStream:
    """A stream, its content made before it starts (a refusal fails the call)."""
    body = call.body
    if call.dialect == TRANSCRIPTIONS.name:
        events = [StreamEvent(data=e) for e in transcript_events(body, opts)]
    elif body.get("stream_format") == "sse":
        events = [StreamEvent(data=e) for e in speech_events(body, opts)]
    else:
        assert call.dialect == SPEECH.name
        events = [StreamEvent(data={}, raw=chunk) for chunk in speech_chunks(body)]
    return MockStream(events, opts)


class MockStream:
    """Events handed out as a stream, with the scripted delay before each and the
    scripted break."""

    def __init__(self, events: list[StreamEvent], opts: dict[str, Any]) -> None:
        self._events = events
        self._delay = float(opts.get("delay_ms") or 0) / 1000
        self._fail_after = opts.get("fail_after")

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        for sent, event in enumerate(self._events):
            if self._fail_after is not None and sent >= self._fail_after:
                raise UpstreamStreamError("mock upstream stream broke")
            if self._delay:
                await asyncio.sleep(self._delay)
            yield event

    async def aclose(self) -> None:
        return None
