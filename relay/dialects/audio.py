"""OpenAI's Audio API: ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``
(a form with the audio ``file``) and ``POST /v1/audio/speech`` (JSON, audio back).

Transcriptions and translations are billed by the second of audio: the upstream's
reported duration (``usage`` of type ``duration``), else the duration read from the
uploaded file itself (``mutagen``: mp3/mpeg/mpga, mp4/m4a, ogg/opus, flac, wav), so
an answer with no usage (text, srt, vtt) is billed all the same. Models that report
tokens (``usage`` of type ``tokens``: audio and text input, text output) are billed
by them too, where the price has rates for them. A WebM upload is refused (a 400
naming ``file``): no maintained library reads its duration, and browser recordings
often do not carry one, so it could not be metered. Transcriptions stream
(``stream: true``: ``transcript.text.delta`` events, then ``transcript.text.done``,
which carries the billed usage and cost).

Speech is billed per character of ``input``, and by the tokens an upstream reports
(``stream_format: "sse"``: ``speech.audio.done``), as the price says. Its audio is
relayed as it arrives, with the content type of its ``response_format``; audio has
no way to say it failed, so a stream that breaks is broken off.
"""

import io
import math
from dataclasses import replace
from typing import Any

import orjson
from mutagen.flac import FLAC
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggspeex import OggSpeex
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from core.money import Units

from .. import sse
from ..errors import ApiError, invalid_request
from ..fields import as_count, as_dict
from ..tokens import count_text
from .base import (
    Accounting,
    Body,
    Dialect,
    RequestParams,
    StreamEvent,
    UpstreamReply,
    with_request_units,
)
from .checks import model_param, stored_text
from .media import (
    AUDIO_FORMATS,
    MEBIBYTE,
    form_choice,
    form_flag,
    form_number,
    form_prompt_estimate,
    form_text,
    media_usage,
    sniffed,
    upload_checked,
)
from .multipart import Upload, parse_form

# OpenAI's limit for an audio upload.
AUDIO_BODY_BYTES = 25 * MEBIBYTE
TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
TRANSLATION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
# Speech formats and the content type each is sent with.
SPEECH_FORMATS = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# Audio input tokens per second, as OpenAI counts them (one per 100 ms): what a
# transcription's hold and token limits allow for its audio.
AUDIO_TOKENS_PER_SECOND = 10
TRANSCRIPT_DONE = "transcript.text.done"
SPEECH_DONE = "speech.audio.done"

_READERS: dict[str, tuple[type, ...]] = {
    "wav": (WAVE,),
    "mp3": (MP3,),
    "flac": (FLAC,),
    "mp4": (MP4,),
    "ogg": (OggOpus, OggVorbis, OggFLAC, OggSpeex),
}


class _View(io.RawIOBase):
    """A read-only file over an upload's bytes: the reader copies only what it reads
    (the headers), never the whole upload."""

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data[self._at : self._at + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._at += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: len(self._data)}[whence]
        self._at = max(0, base + offset)
        return self._at

    def tell(self) -> int:
        return self._at


def duration_ms(upload: Upload, audio_format: str) -> int:
    """The duration of an uploaded audio file of ``audio_format`` (as its leading
    bytes show), in milliseconds; a 400 naming ``file`` when it cannot be read."""
    readers = _READERS.get(audio_format)
    if readers is None:
        raise invalid_request(
            f"The duration of {audio_format} audio cannot be read, so it cannot be billed; "
            f"send {', '.join(sorted(_READERS))} audio instead.",
            param="file",
            code="unsupported_file_format",
        )
    info = None
    for reader in readers:
        try:
            info = reader(_View(upload.data)).info
            break
        # Untrusted bytes: whatever the reader fails on is the upload's fault.
        except Exception:  # noqa: S112
            continue
    length = getattr(info, "length", None)
    bitrate = getattr(info, "bitrate", 0)
    if audio_format == "wav" and isinstance(length, int | float) and bitrate:
        # A WAV header may say more than the file holds (a file cut short, or one
        # written while streaming, with an unknown length): what was sent is billed.
        length = min(length, upload.size * 8 / bitrate)
    if not isinstance(length, int | float) or not length > 0:
        raise invalid_request(
            f"`file` could not be read as {audio_format} audio (it is corrupt or holds no sound).",
            param="file",
            code="invalid_file_format",
        )
    return max(1, round(length * 1000))


def transcript_units(usage: Any) -> Units | None:
    """A transcription's ``usage``: of type ``duration`` (``seconds``), or of type
    ``tokens`` (``input_tokens`` with ``input_token_details`` of audio and text
    tokens, ``output_tokens``), each token in one kind."""
    if not isinstance(usage, dict):
        return None
    if usage.get("type") == "duration":
        seconds = usage.get("seconds")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
            return Units(audio_ms=round(seconds * 1000))
        return None
    prompt = as_count(usage.get("input_tokens"))
    details = as_dict(usage.get("input_token_details") or usage.get("input_tokens_details"))
    audio = min(as_count(details.get("audio_tokens")), prompt)
    return Units(
        input=prompt - audio, audio_input=audio, output=as_count(usage.get("output_tokens"))
    )


def speech_units(usage: Any) -> Units | None:
    """A speech stream's ``usage`` (``speech.audio.done``): text in, audio out."""
    if not isinstance(usage, dict):
        return None
    return Units(
        input=as_count(usage.get("input_tokens")),
        audio_output=as_count(usage.get("output_tokens")),
    )


def transcript_usage(units: Units, cost: int, upstream: dict[str, Any] | None) -> dict[str, Any]:
    """The ``usage`` of a transcript: the upstream's, else the duration billed (OpenAI's
    ``duration`` usage), with the units and cost of ``media_usage``."""
    base = upstream or {"type": "duration", "seconds": units.audio_ms / 1000}
    return media_usage(units, cost, base)


class _TypedEvents:
    """An SSE stream of typed events relayed as they come, but its ``done`` event,
    which is sent last, once the stream is billed, with the billed usage and cost."""

    content_type = sse.EVENT_STREAM

    def __init__(self, done: str, usage: Any) -> None:
        self._done = done
        self._usage = usage
        self._last: dict[str, Any] = {"type": done}

    def event(self, event: StreamEvent) -> bytes | None:
        if event.data.get("type") == self._done:
            self._last = event.data
            return None
        if event.raw is not None:
            return event.raw
        return sse.encode(orjson.dumps(event.data))

    def end(self, tokens: Units, cost: int) -> bytes:
        upstream = self._last.get("usage")
        last = {**self._last, "usage": self._usage(tokens, cost, as_dict(upstream) or None)}
        return sse.encode(orjson.dumps(last))

    def error(self, failure: ApiError) -> bytes:
        return sse.encode(orjson.dumps({"type": "error", **failure.payload()}))


class _AudioBytes:
    """Audio relayed as it arrives. It has no way to say it failed: a broken stream is
    broken off (``error`` is None)."""

    def __init__(self, content_type: str) -> None:
        self.content_type = content_type

    def event(self, event: StreamEvent) -> bytes | None:
        return event.raw

    def end(self, tokens: Units, cost: int) -> bytes:
        return b""

    def error(self, failure: ApiError) -> None:
        return None


class TranscriptAccounting(Accounting):
    """Counts the transcript text handed to the client."""

    def __init__(self, dialect: Dialect, body: dict[str, Any]) -> None:
        super().__init__(dialect, body)
        self.text: list[str] = []

    def delivered(self, data: dict[str, Any]) -> None:
        if data.get("type") == "transcript.text.delta" and isinstance(data.get("delta"), str):
            self.text.append(data["delta"])

    def output(self) -> Units:
        return Units(output=count_text("".join(self.text)))


class SpeechAccounting(Accounting):
    """Speech is billed by its input; the audio delivered adds nothing countable."""

    def delivered(self, data: dict[str, Any]) -> None:
        return None

    def output(self) -> Units:
        return Units()


class Transcriptions(Dialect):
    name = "audio.transcriptions"
    path = "/v1/audio/transcriptions"
    mode = "audio_transcription"
    max_body_bytes = AUDIO_BODY_BYTES
    formats: tuple[str, ...] = TRANSCRIPT_FORMATS
    streams = True

    def parse(self, raw: Body, content_type: str | None) -> dict[str, Any]:
        return parse_form(raw, content_type)

    def validate(self, body: dict[str, Any]) -> RequestParams:
        model = form_text(body, "model", required=True)
        assert model is not None
        upload = body.get("file")
        if upload is None:
            raise invalid_request("You must provide the audio `file`.", param="file")
        if isinstance(upload, list):
            raise invalid_request("`file` must be one file.", param="file")
        audio_format = upload_checked(upload, "file", "audio", AUDIO_FORMATS)
        milliseconds = duration_ms(upload, audio_format)
        form_choice(body, "response_format", self.formats)
        form_text(body, "prompt")
        form_text(body, "language")
        form_number(body, "temperature", 0, 1)
        stream = form_flag(body, "stream")
        if stream and not self.streams:
            raise invalid_request(f"`stream` is not offered by {self.path}.", param="stream")
        return RequestParams(
            model=model,
            stream=stream,
            include_usage=False,
            max_tokens=None,
            n=1,
            user=stored_text(form_text(body, "user") or ""),
            units=Units(audio_ms=milliseconds),
        )

    def prompt_estimate(self, raw: Body, body: dict[str, Any]) -> int:
        # Models billed by the token count the audio as audio tokens: held for too. Its
        # duration is read again from its header (a few bytes, not the upload).
        upload = body["file"]
        seconds = duration_ms(upload, sniffed(upload.data) or "") / 1000
        return form_prompt_estimate(body) + math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        prompt = body.get("prompt")
        return count_text(prompt) if isinstance(prompt, str) else 0

    def prompt_units(self, params: RequestParams, body: dict[str, Any]) -> Units:
        # The upstream had the audio: its seconds are billed as a chat's prompt is.
        assert params.units is not None
        return Units(input=self.prompt_tokens(body), audio_ms=params.units.audio_ms)

    def estimate(self, body: dict[str, Any], answer: dict[str, Any]) -> Units:
        text = answer.get("text")
        return Units(
            input=self.prompt_tokens(body),
            output=count_text(text) if isinstance(text, str) else 0,
        )

    def units(self, params: RequestParams, reported: Units, reply: UpstreamReply | None) -> Units:
        units = with_request_units(reported, params.units)
        if reply is not None and reply.tokens is None and reply.raw is not None:
            # A transcript as text, srt or vtt: its words are the output.
            units = replace(units, output=count_text(reply.raw.decode("utf-8", "replace")))
        return units

    def render(self, reply: UpstreamReply, tokens: Units, cost: int) -> dict[str, Any]:
        reply.body["usage"] = transcript_usage(tokens, cost, reply.upstream_usage)
        return reply.body

    def accounting(self, body: dict[str, Any]) -> TranscriptAccounting:
        return TranscriptAccounting(self, body)

    def stream_format(self, params: RequestParams) -> _TypedEvents:
        return _TypedEvents(TRANSCRIPT_DONE, transcript_usage)


class Translations(Transcriptions):
    name = "audio.translations"
    path = "/v1/audio/translations"
    formats = TRANSLATION_FORMATS
    streams = False


class Speech(Dialect):
    name = "audio.speech"
    path = "/v1/audio/speech"
    mode = "audio_speech"

    def validate(self, body: dict[str, Any]) -> RequestParams:
        model = model_param(body)
        text = body.get("input")
        if not isinstance(text, str) or not text:
            raise invalid_request("`input` must be a non-empty string.", param="input")
        voice = body.get("voice")
        named = isinstance(voice, str) and voice.strip()
        custom = isinstance(voice, dict) and isinstance(voice.get("id"), str) and voice["id"]
        if not (named or custom):
            raise invalid_request(
                "`voice` must be a voice's name or an object with its `id`.", param="voice"
            )
        response_format = body.get("response_format", "mp3")
        if not isinstance(response_format, str) or response_format not in SPEECH_FORMATS:
            raise invalid_request(
                f"`response_format` must be one of {', '.join(SPEECH_FORMATS)}.",
                param="response_format",
            )
        stream_format = body.get("stream_format", "audio")
        if stream_format not in ("audio", "sse"):
            raise invalid_request(
                "`stream_format` must be `audio` or `sse`.", param="stream_format"
            )
        speed = body.get("speed")
        if speed is not None and (
            not isinstance(speed, int | float) or isinstance(speed, bool) or not 0.25 <= speed <= 4
        ):
            raise invalid_request("`speed` must be a number from 0.25 to 4.", param="speed")
        if body.get("instructions") is not None and not isinstance(body["instructions"], str):
            raise invalid_request("`instructions` must be a string.", param="instructions")
        return RequestParams(
            model=model,
            # The audio is relayed as it arrives, whatever the client asked.
            stream=True,
            include_usage=False,
            max_tokens=None,
            n=1,
            user="",
            units=Units(characters=len(text)),
            answer_format="sse" if stream_format == "sse" else response_format,
        )

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        return sum(
            count_text(body[name])
            for name in ("input", "instructions")
            if isinstance(body.get(name), str)
        )

    def prompt_units(self, params: RequestParams, body: dict[str, Any]) -> Units:
        assert params.units is not None
        return Units(input=self.prompt_tokens(body), characters=params.units.characters)

    def accounting(self, body: dict[str, Any]) -> SpeechAccounting:
        return SpeechAccounting(self, body)

    def stream_format(self, params: RequestParams) -> _TypedEvents | _AudioBytes:
        if params.answer_format == "sse":
            return _TypedEvents(SPEECH_DONE, media_usage)
        return _AudioBytes(SPEECH_FORMATS[params.answer_format])


TRANSCRIPTIONS = Transcriptions()
TRANSLATIONS = Translations()
SPEECH = Speech()
