"""The media endpoints over an OpenAI-compatible upstream: images, audio, rerank and
moderations, each at its own path (``PATHS``), sent as it came (JSON, or a form
whose files are the caller's bytes, not copies).

What an answer means does not depend on how it arrived: ``reply_of`` reads a whole
answer and ``Events`` a stream, with the usage each reports, for this provider's
HTTP transport (``http_fetch``, ``http_open``) and the mock's in-process one alike.
A stream of transcript or speech events ends with its ``done`` event (which carries
the usage); one that ends without it was cut short. An upstream that answers a
streamed transcription in one piece (whisper-1 does not stream) is relayed as the
two events a stream would have been.

OpenAI's GPT speech models bill by the token and report the tokens only at the end
of a stream of events, never with raw audio: speech from them that the client wants
as audio is asked for as events all the same and relayed as the audio in them, as
each delta arrives (``AudioOfEvents``), so its audio tokens are billed as reported.
"""

import base64
import binascii
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from ... import sse
from ...dialects import (
    IMAGE_EDITS,
    IMAGE_GENERATIONS,
    MODERATIONS,
    RERANK,
    SPEECH,
    TRANSCRIPTIONS,
    TRANSLATIONS,
)
from ...dialects import images as images_dialect
from ...dialects import rerank as rerank_dialect
from ...dialects.audio import SPEECH_DONE, TRANSCRIPT_DONE, speech_units, transcript_units
from ...dialects.base import StreamEvent, UpstreamReply
from ...fields import as_str
from .. import client
from ..base import Call, UpstreamStream, UpstreamStreamError
from ..http import ByteStream, forwarded_for, json_event, read_json, read_raw, send, send_form
from ..http import sse_events as sse_events_of
from .usage import reported

# The upstream path of each media dialect.
PATHS = {
    IMAGE_GENERATIONS.name: "/images/generations",
    IMAGE_EDITS.name: "/images/edits",
    TRANSCRIPTIONS.name: "/audio/transcriptions",
    TRANSLATIONS.name: "/audio/translations",
    SPEECH.name: "/audio/speech",
    RERANK.name: "/rerank",
    MODERATIONS.name: "/moderations",
}
# Sent as multipart forms (with their uploads); the others as JSON.
FORMS = frozenset({IMAGE_EDITS.name, TRANSCRIPTIONS.name, TRANSLATIONS.name})
# May answer with a transcript that is not JSON (text, srt, vtt).
TRANSCRIPTS = frozenset({TRANSCRIPTIONS.name, TRANSLATIONS.name})

_READERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    IMAGE_GENERATIONS.name: images_dialect.reported,
    IMAGE_EDITS.name: images_dialect.reported,
    TRANSCRIPTIONS.name: lambda data: transcript_units(data.get("usage")),
    TRANSLATIONS.name: lambda data: transcript_units(data.get("usage")),
    RERANK.name: rerank_dialect.reported,
    MODERATIONS.name: reported,
}


@dataclass(frozen=True, slots=True)
class Wire:
    """A whole answer as the upstream sent it: a JSON object, or (a transcript as
    text, srt or vtt) bytes of another content type."""

    data: dict[str, Any]
    raw: bytes | None = None
    content_type: str = "application/json"


Fetch = Callable[[Call, str], Awaitable[Wire]]
Open = Callable[[Call, str], Awaitable[UpstreamStream]]


def reply_of(call: Call, wire: Wire) -> UpstreamReply:
    """A whole answer in the dialect's format, with the usage it reports."""
    if wire.raw is not None:
        return UpstreamReply(
            body={}, upstream_usage=None, tokens=None, raw=wire.raw, content_type=wire.content_type
        )
    data = wire.data
    if call.dialect == RERANK.name:
        data = rerank_dialect.answer_as_asked(data, call.body)
    usage = data.get("usage")
    return UpstreamReply(
        body=data,
        upstream_usage=usage if isinstance(usage, dict) else None,
        tokens=_READERS[call.dialect](data),
    )


async def answer(call: Call, fetch: Fetch) -> UpstreamReply:
    return reply_of(call, await fetch(call, PATHS[call.dialect]))


async def stream(call: Call, open_stream: Open) -> UpstreamStream:
    if _speech_by_the_token(call):
        asked = replace(call, body={**call.body, "stream_format": "sse"})
        return AudioOfEvents(await open_stream(asked, PATHS[call.dialect]))
    return Events(await open_stream(call, PATHS[call.dialect]), call)


def _speech_by_the_token(call: Call) -> bool:
    """Speech wanted as audio from a GPT speech model (the tts-1 models, billed per
    character, offer no events)."""
    body = call.body
    return (
        call.dialect == SPEECH.name
        and body.get("stream_format", "audio") == "audio"
        and str(body.get("model")).startswith("gpt-")
    )


class AudioOfEvents:
    """Speech events relayed as the audio they carry, each delta's bytes as they
    arrive; the ``done`` event's usage rides on an event of no bytes. An upstream
    that answers audio anyway is relayed as it came (billed by its input)."""

    def __init__(self, inner: UpstreamStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        typed = finished = False
        async for event in self._inner:
            data = event.data
            kind = data.get("type")
            typed = typed or bool(data)
            if not data:
                yield event  # raw audio
            elif kind == "speech.audio.delta":
                try:
                    audio = base64.b64decode(as_str(data.get("audio")), validate=True)
                except binascii.Error:
                    raise UpstreamStreamError(
                        "The upstream provider sent audio that is not base64."
                    ) from None
                if audio:
                    yield StreamEvent(data={}, raw=audio)
            elif kind == SPEECH_DONE:
                finished = True
                usage = speech_units(data.get("usage"))
                yield StreamEvent(data={}, usage=usage, usage_final=usage is not None)
            elif kind == "error" or "error" in data:
                raise UpstreamStreamError("The upstream provider reported an error mid-stream.")
        if typed and not finished:
            raise UpstreamStreamError("The upstream provider's stream ended early.")

    async def aclose(self) -> None:
        await self._inner.aclose()


def _done_event(call: Call) -> tuple[str, Callable[[Any], Any]] | None:
    """The event that ends the call's stream and reads its usage (None: raw audio)."""
    if call.dialect == TRANSCRIPTIONS.name:
        return TRANSCRIPT_DONE, transcript_units
    if call.dialect == SPEECH.name and call.body.get("stream_format") == "sse":
        return SPEECH_DONE, speech_units
    return None


def transcript_events(data: dict[str, Any]) -> list[dict[str, Any]]:
    """A whole transcription as the events a stream of it ends with."""
    text = data.get("text") if isinstance(data.get("text"), str) else ""
    done: dict[str, Any] = {"type": TRANSCRIPT_DONE, "text": text}
    if isinstance(data.get("usage"), dict):
        done["usage"] = data["usage"]
    return [{"type": "transcript.text.delta", "delta": text}, done]


class Events:
    """An upstream's events (or audio chunks) as the dialect's, with the usage the last
    one reports; an error event, or an end before the ``done`` event, breaks it."""

    def __init__(self, inner: UpstreamStream, call: Call) -> None:
        self._inner = inner
        self._done = _done_event(call)

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        if self._done is None:
            async for chunk in self._inner:
                yield chunk
            return
        done, usage_of = self._done
        finished = False
        async for event in self._inner:
            data = event.data
            kind = data.get("type")
            if kind == "error" or (kind is None and "error" in data):
                raise UpstreamStreamError("The upstream provider reported an error mid-stream.")
            if kind is None and done == TRANSCRIPT_DONE and isinstance(data.get("text"), str):
                parts = [StreamEvent(data=part) for part in transcript_events(data)]
            else:
                parts = [event]
            for part in parts:
                if part.data.get("type") == done:
                    usage = usage_of(part.data.get("usage"))
                    part = StreamEvent(
                        data=part.data, raw=part.raw, usage=usage, usage_final=usage is not None
                    )
                    finished = True
                yield part
        if not finished:
            raise UpstreamStreamError("The upstream provider's stream ended early.")

    async def aclose(self) -> None:
        await self._inner.aclose()


# -- the HTTP transport ---------------------------------------------------------------------


def _headers(call: Call, forwarded: tuple[str, ...]) -> dict[str, str]:
    return {
        **forwarded_for(call.forwarded, forwarded),
        "authorization": f"Bearer {call.channel.api_key}",
    }


async def _send(call: Call, path: str, headers: dict[str, str]) -> client.UpstreamResponse:
    channel = call.channel
    url = f"{channel.base_url}{path}"
    if call.dialect in FORMS:
        return await send_form(channel, url, call.body, headers)
    return await send(channel, url, call.body, {**headers, "content-type": "application/json"})


def _is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/json"


async def http_fetch(call: Call, path: str, forwarded: tuple[str, ...]) -> Wire:
    """The whole answer of ``{base_url}{path}`` (``forwarded``: the caller's headers
    that go along)."""
    response = await _send(call, path, _headers(call, forwarded))
    if call.dialect in TRANSCRIPTS and not _is_json(response.content_type):
        raw, content_type = await read_raw(response)
        return Wire(data={}, raw=raw, content_type=content_type)
    return Wire(data=await read_json(response))


async def http_open(call: Call, path: str, forwarded: tuple[str, ...]) -> UpstreamStream:
    """The stream of ``{base_url}{path}`` once its headers arrived: SSE events, audio
    chunks, or a transcript answered in one piece."""
    response = await _send(call, path, _headers(call, forwarded))
    content_type = response.content_type.split(";")[0].strip().lower()
    if content_type == "text/event-stream":
        return SseEvents(response)
    if call.dialect in TRANSCRIPTS:
        return WholeAnswer(response)
    return ByteStream(response)


class SseEvents:
    """The JSON events of an SSE answer as they arrive (an unfinished last one is not
    passed on)."""

    def __init__(self, response: client.UpstreamResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        async for raw, data, terminated in sse_events_of(self._response):
            if data.strip() == sse.DONE or not terminated:
                return
            yield StreamEvent(data=json_event(data), raw=raw + b"\n\n")

    async def aclose(self) -> None:
        self._response.close()


class WholeAnswer:
    """A transcript answered in one piece where a stream was asked for: one event of
    the whole answer (a JSON object, or ``text`` for any other content type)."""

    def __init__(self, response: client.UpstreamResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        try:
            content = await self._response.read()
        except client.TransportError:
            raise UpstreamStreamError("The upstream provider's answer broke off.") from None
        if _is_json(self._response.content_type):
            yield StreamEvent(data=json_event(content))
        else:
            yield StreamEvent(data={"text": content.decode("utf-8", "replace")})

    async def aclose(self) -> None:
        self._response.close()
