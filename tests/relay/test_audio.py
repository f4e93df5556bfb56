"""Audio through the official OpenAI client and a loopback upstream: transcriptions and
translations billed by the second of the uploaded audio (or by reported tokens),
speech by the character (or by reported tokens), its audio relayed as it arrives."""

import httpx
import openai
import orjson
import pytest

from tests.support.factories import ChannelFactory
from tests.support.media import (
    SPEECH_CHUNK,
    SPEECH_CHUNKS,
    money,
    mp3,
    png,
    settled,
    wav,
)
from tests.support.relay import error_of
from tests.support.waiting import wait_for
from usage.models import UsageRecord

PICO = 10**12
# whisper-1: $0.0001 per second, 100 pico-USD per millisecond.
WHISPER_PICO_PER_MS = 100_000_000 // 1000


@pytest.mark.parametrize(
    ("make", "name", "content_type"),
    [(wav, "clip.wav", "audio/wav"), (mp3, "clip.mp3", "audio/mpeg")],
    ids=["wav", "mp3"],
)
def test_a_transcription_is_billed_by_the_seconds_of_its_file(media_env, make, name, content_type):
    for seconds in (3, 12):
        answer = media_env.client.audio.transcriptions.create(
            model="whisper-1",
            file=(name, make(seconds), content_type),
            extra_headers={"x-request-id": f"stt-{name}-{seconds}"},
        )
        assert answer.text == "The quick brown fox jumps over the lazy dog."
        # The upstream reported no usage: the duration came from the file.
        assert answer.usage.model_extra["audio_seconds"] == seconds
        assert answer.usage.model_extra["cost"] == f"{seconds / 10000:.6f}"

    short, long = settled(f"stt-{name}-3"), settled(f"stt-{name}-12")
    assert (short.audio_ms, long.audio_ms) == (3000, 12000)
    assert (short.cost_pico, long.cost_pico) == (3 * PICO // 10000, 12 * PICO // 10000)
    assert short.price_snapshot["components"] == [
        {
            "unit": "audio_second",
            "rate": "0.0001",
            "per": "second",
            "quantity": 3.0,
            "cost": "0.000300",
        }
    ]
    # The file went upstream as it came.
    sent = media_env.upstream.requests[0]
    assert sent["form"] == {"model": "whisper-1"}
    assert sent["files"]["file"] == [(name, content_type, len(make(3)))]


@pytest.mark.parametrize(
    ("kind", "starts"),
    [("text", "The quick"), ("srt", "1\n00:00:00,000"), ("vtt", "WEBVTT")],
)
def test_a_transcript_without_usage_is_billed_by_duration_all_the_same(media_env, kind, starts):
    raw = media_env.client.audio.transcriptions.with_raw_response.create(
        model="whisper-1",
        file=("clip.wav", wav(3), "audio/wav"),
        response_format=kind,
        extra_headers={"x-request-id": f"stt-{kind}"},
    )

    assert raw.headers["content-type"].startswith("text/plain")
    assert raw.parse().startswith(starts)
    # A transcript as text has nowhere else to say what it cost.
    assert raw.headers["x-tollgate-cost"] == "0.000300"
    record = settled(f"stt-{kind}")
    assert (record.audio_ms, record.cost_pico) == (3000, 3000 * WHISPER_PICO_PER_MS)


def test_a_wav_whose_header_says_more_than_it_holds_is_billed_what_it_holds(media_env):
    cut = wav(3)[: 44 + 16000]  # the header says 3 s; one second of samples came
    unknown = bytearray(wav(2))  # written while streaming: sizes unknown
    unknown[4:8] = unknown[40:44] = b"\xff\xff\xff\xff"

    for name, clip in (("cut", cut), ("unknown", bytes(unknown))):
        media_env.client.audio.transcriptions.create(
            model="whisper-1",
            file=("clip.wav", clip, "audio/wav"),
            extra_headers={"x-request-id": f"stt-{name}"},
        )

    # To the millisecond: the 44 header bytes are 3 ms of 16 kB/s audio.
    assert settled("stt-cut").audio_ms == 1003
    assert settled("stt-unknown").audio_ms == 2003


def test_reported_duration_is_billed_rather_than_the_files(media_env):
    media_env.upstream.then(usage={"type": "duration", "seconds": 4})

    answer = media_env.client.audio.transcriptions.create(
        model="whisper-1",
        file=("clip.wav", wav(3.2), "audio/wav"),
        response_format="verbose_json",
        extra_headers={"x-request-id": "stt-reported"},
    )

    assert answer.usage.seconds == 4 and answer.usage.model_extra["cost"] == "0.000400"
    assert settled("stt-reported").audio_ms == 4000


def test_reported_tokens_are_billed_by_kind(media_env):
    media_env.upstream.then(
        usage={
            "type": "tokens",
            "input_tokens": 130,
            "input_token_details": {"text_tokens": 10, "audio_tokens": 120},
            "output_tokens": 12,
            "total_tokens": 142,
        }
    )

    answer = media_env.client.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe",
        file=("clip.mp3", mp3(12), "audio/mpeg"),
        prompt="Foxes",
        extra_headers={"x-request-id": "stt-tokens"},
    )

    record = settled("stt-tokens")
    assert (record.input_tokens, record.audio_input_tokens, record.output_tokens) == (10, 120, 12)
    assert record.audio_ms == 12000 and not record.estimated
    # 10 text at $1.25/M, 120 audio at $3/M, 12 output at $5/M.
    assert record.cost_pico == (10 * 125 // 100 + 120 * 3 + 12 * 5) * 10**6 + 500_000
    assert answer.usage.type == "tokens" and answer.usage.input_tokens == 130
    assert media_env.upstream.requests[0]["form"]["prompt"] == "Foxes"


def test_a_streamed_transcription_relays_its_events_and_ends_with_the_bill(media_env):
    media_env.upstream.then(
        usage={
            "type": "tokens",
            "input_tokens": 30,
            "input_token_details": {"text_tokens": 0, "audio_tokens": 30},
            "output_tokens": 9,
            "total_tokens": 39,
        }
    )

    events = list(
        media_env.client.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe",
            file=("clip.wav", wav(3), "audio/wav"),
            stream=True,
            extra_headers={"x-request-id": "stt-stream"},
        )
    )

    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert "".join(deltas).strip() == "The quick brown fox jumps over the lazy dog."
    assert events[-1].type == "transcript.text.done"
    usage = events[-1].usage
    assert (usage.input_tokens, usage.output_tokens) == (30, 9)
    # 30 audio tokens at $3/M and 9 output at $5/M.
    assert usage.model_extra["cost"] == "0.000135"
    record = settled("stt-stream")
    assert record.stream and record.cost_pico == (30 * 3 + 9 * 5) * 10**6
    assert media_env.upstream.requests[0]["form"]["stream"] == "true"


def test_a_transcription_answered_in_one_piece_still_streams(media_env):
    media_env.upstream.then(whole=True, usage={"type": "duration", "seconds": 3})

    events = list(
        media_env.client.audio.transcriptions.create(
            model="whisper-1",
            file=("clip.wav", wav(3), "audio/wav"),
            stream=True,
            extra_headers={"x-request-id": "stt-whole"},
        )
    )

    assert [e.type for e in events] == ["transcript.text.delta", "transcript.text.done"]
    assert events[0].delta == events[1].text == "The quick brown fox jumps over the lazy dog."
    assert events[1].usage.model_extra["cost"] == "0.000300"
    assert settled("stt-whole").audio_ms == 3000


def test_a_transcription_stream_broken_off_ends_with_an_error_and_bills_the_audio(media_env):
    media_env.upstream.then(break_after=3)

    response = media_env.post(
        "/v1/audio/transcriptions",
        data={"model": "gpt-4o-mini-transcribe", "stream": "true"},
        files={"file": ("clip.wav", wav(3), "audio/wav")},
        headers={"x-request-id": "stt-broken"},
    )

    events = [orjson.loads(e[6:]) for e in response.content.split(b"\n\n") if e]
    assert [e["type"] for e in events] == ["transcript.text.delta"] * 3 + ["error"]
    assert events[-1]["error"]["type"] == "upstream_error"
    record = settled("stt-broken")
    assert record.status == "interrupted" and record.estimated
    # The audio the upstream had, and the three words delivered (4 tokens), at $5/M.
    assert (record.audio_ms, record.output_tokens) == (3000, 4)
    assert record.cost_pico == 4 * 5 * 10**6


# The client marks translations deprecated; the endpoint is still OpenAI's.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_translation_is_billed_by_duration(media_env):
    answer = media_env.client.audio.translations.create(
        model="whisper-1",
        file=("clip.wav", wav(12), "audio/wav"),
        extra_headers={"x-request-id": "translate"},
    )

    assert answer.text
    assert media_env.upstream.requests[0]["path"] == "/audio/translations"
    record = settled("translate")
    assert (record.endpoint, record.audio_ms) == ("audio.translations", 12000)
    assert record.cost_pico == 12 * PICO // 10000


def test_a_client_leaving_a_transcription_is_billed_the_audio_the_upstream_had(media_env):
    media_env.upstream.then(delay=3)

    with pytest.raises(httpx.ReadTimeout):
        media_env.post(
            "/v1/audio/transcriptions",
            data={"model": "whisper-1"},
            files={"file": ("clip.wav", wav(3), "audio/wav")},
            headers={"x-request-id": "stt-left"},
            timeout=1,
        )

    record = settled("stt-left")
    assert record.status == "cancelled"
    assert (record.audio_ms, record.cost_pico) == (3000, 3000 * WHISPER_PICO_PER_MS)


BAD_AUDIO = [
    (("notes.wav", b"these are my meeting notes, not audio", "audio/wav"), "invalid_file_format"),
    (("clip.mp3", wav(1), "audio/mpeg"), "invalid_file_format"),
    (("clip.wav", wav(1), "image/png"), "invalid_file_format"),
    (("clip.wav", b"RIFF\x24\x00\x00\x00WAVEjunkjunkjunkjunk", "audio/wav"), "invalid_file_format"),
    (("clip.wav", wav(0), "audio/wav"), "invalid_file_format"),
    (("clip.webm", b"\x1a\x45\xdf\xa3" + bytes(200), "audio/webm"), "unsupported_file_format"),
    (("photo.png", png(), "image/png"), "invalid_file_format"),
]


@pytest.mark.parametrize(
    ("upload", "code"),
    BAD_AUDIO,
    ids=["text", "wav-said-mp3", "wav-said-png", "corrupt", "silent", "webm", "image"],
)
def test_an_upload_that_is_not_readable_audio_is_a_400_and_costs_nothing(media_env, upload, code):
    before = money(media_env)

    response = media_env.post(
        "/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": upload}
    )

    error = error_of(response, 400)
    assert (error["param"], error["code"]) == ("file", code)
    assert media_env.upstream.calls == 0
    assert money(media_env) == before
    # Refused after authentication: recorded, at no cost.
    record = wait_for(lambda: UsageRecord.objects.filter(status="rejected").first())
    assert record.cost_pico == 0 and record.hold_id is None


def test_audio_over_25_mb_is_a_413_and_costs_nothing(media_env):
    before = money(media_env)

    response = media_env.post(
        "/v1/audio/translations",
        data={"model": "whisper-1"},
        files={"file": ("long.wav", wav(1) + bytes(25 * 1024 * 1024), "audio/wav")},
    )

    error = error_of(response, 413)
    assert str(25 * 1024 * 1024) in error["message"]
    assert media_env.upstream.calls == 0
    assert money(media_env) == before


def test_form_fields_are_checked(media_env):
    clip = {"file": ("clip.wav", wav(1), "audio/wav")}
    for data, files, param in [
        ({}, clip, "model"),
        ({"model": "whisper-1"}, {"prompt": (None, "hello")}, "file"),
        ({"model": "whisper-1", "response_format": "mp3"}, clip, "response_format"),
        ({"model": "whisper-1", "temperature": "hot"}, clip, "temperature"),
        ({"model": "whisper-1", "stream": "yes"}, clip, "stream"),
    ]:
        response = media_env.post("/v1/audio/transcriptions", data=data, files=files)
        assert error_of(response, 400)["param"] == param
    response = media_env.post(
        "/v1/audio/translations", data={"model": "whisper-1", "stream": "true"}, files=clip
    )
    assert error_of(response, 400)["param"] == "stream"
    assert media_env.upstream.calls == 0


# -- speech -------------------------------------------------------------------------------


def test_speech_is_streamed_back_and_billed_per_character(media_env):
    text = "Hello there, how are you today?"

    with media_env.client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="alloy",
        input=text,
        extra_headers={"x-request-id": "tts"},
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        audio = b"".join(response.iter_bytes())

    assert audio == SPEECH_CHUNK * SPEECH_CHUNKS
    record = settled("tts")
    assert record.status == "success"
    assert record.characters == len(text) == 31
    # 31 characters at $15 per 1M.
    assert record.cost_pico == 31 * 15 * 10**6
    assert record.price_snapshot["components"][0]["quantity"] == 31
    assert media_env.upstream.requests[0]["json"] == {
        "model": "tts-1",
        "voice": "alloy",
        "input": text,
    }


@pytest.mark.parametrize(("kind", "content_type"), [("wav", "audio/wav"), ("opus", "audio/opus")])
def test_speech_has_the_content_type_of_its_format(media_env, kind, content_type):
    answer = media_env.client.audio.speech.create(
        model="tts-1", voice="nova", input="Hi", response_format=kind
    )
    assert answer.response.headers["content-type"] == content_type


def test_speech_as_events_is_billed_by_the_tokens_reported(media_env):
    media_env.upstream.then(usage={"input_tokens": 8, "output_tokens": 400, "total_tokens": 408})

    response = media_env.post(
        "/v1/audio/speech",
        json={
            "model": "gpt-4o-mini-tts",
            "voice": "alloy",
            "input": "Hello",
            "stream_format": "sse",
        },
        headers={"x-request-id": "tts-sse"},
    )

    assert response.headers["content-type"].startswith("text/event-stream")
    events = [orjson.loads(e[6:]) for e in response.content.split(b"\n\n") if e]
    assert [e["type"] for e in events] == ["speech.audio.delta"] * SPEECH_CHUNKS + [
        "speech.audio.done"
    ]
    usage = events[-1]["usage"]
    # 8 text tokens at $0.60/M and 400 audio tokens at $12/M.
    assert usage["cost"] == "0.0048048"
    record = settled("tts-sse")
    assert (record.input_tokens, record.audio_output_tokens) == (8, 400)
    assert record.characters == 5
    assert record.cost_pico == (8 * 60 // 100 + 400 * 12) * 10**6 + 800_000


def test_speech_from_a_gpt_model_comes_as_audio_and_is_billed_by_the_tokens(media_env):
    media_env.upstream.then(usage={"input_tokens": 8, "output_tokens": 400, "total_tokens": 408})

    with media_env.client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="alloy",
        input="Hello",
        extra_headers={"x-request-id": "tts-tokens"},
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        audio = b"".join(response.iter_bytes())

    # The client asked for audio and got it, the same bytes the events carried.
    assert audio == SPEECH_CHUNK * SPEECH_CHUNKS
    assert media_env.upstream.requests[0]["json"]["stream_format"] == "sse"
    record = settled("tts-tokens")
    assert (record.status, record.estimated) == ("success", False)
    assert (record.input_tokens, record.audio_output_tokens) == (8, 400)
    # 8 text tokens at $0.60/M and 400 audio tokens at $12/M: the audio is most of it.
    assert record.cost_pico == (8 * 60 // 100 + 400 * 12) * 10**6 + 800_000


def test_speech_events_that_stop_short_are_broken_off(media_env):
    media_env.upstream.then(break_after=3)

    with pytest.raises(httpx.RemoteProtocolError):
        media_env.post(
            "/v1/audio/speech",
            json={"model": "gpt-4o-mini-tts", "voice": "alloy", "input": "Hi"},
            headers={"x-request-id": "tts-tokens-broken"},
        )

    record = settled("tts-tokens-broken")
    assert record.status == "interrupted"
    # Billed its input, counted here, as any stream that ends without its usage.
    assert record.estimated and record.audio_output_tokens == 0


def test_a_client_leaving_speech_mid_stream_is_billed_its_input(media_env):
    media_env.upstream.then(chunk_delay=0.1)

    with media_env.http.stream(
        "POST",
        "/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": "A long story"},
        headers={"authorization": f"Bearer {media_env.key.secret}", "x-request-id": "tts-left"},
    ) as response:
        received = b""
        for chunk in response.iter_raw():
            received += chunk
            if len(received) >= 3 * len(SPEECH_CHUNK):
                break  # leaving the block closes the connection mid-stream

    record = settled("tts-left")
    assert record.status == "cancelled"
    # As a chat stream is billed its prompt: the upstream had the whole input.
    assert record.characters == 12 and record.cost_pico == 12 * 15 * 10**6
    wait_for(lambda: media_env.upstream.streams_cancelled == 1)


def test_speech_fails_over_before_its_first_byte(media_env, media_upstreams):
    spare = media_upstreams["media"][1]
    media_env.channel.priority = 1
    media_env.channel.save()
    ChannelFactory(name="speech-spare", base_url=spare.base_url, served_models=["tts-1"])
    media_env.upstream.then(status=429)

    answer = media_env.client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hi", extra_headers={"x-request-id": "tts-failover"}
    )

    assert answer.content == SPEECH_CHUNK * SPEECH_CHUNKS
    record = settled("tts-failover")
    assert [a["status"] for a in record.attempts] == [429, 200]
    assert record.cost_pico == 2 * 15 * 10**6


def test_speech_broken_by_the_upstream_is_broken_off_and_billed_its_input(media_env):
    media_env.upstream.then(break_after=3)

    with pytest.raises(httpx.RemoteProtocolError):
        media_env.post(
            "/v1/audio/speech",
            json={"model": "tts-1", "voice": "alloy", "input": "Hi"},
            headers={"x-request-id": "tts-broken"},
        )

    record = settled("tts-broken")
    assert record.status == "interrupted" and record.cost_pico == 2 * 15 * 10**6


def test_speech_fields_are_checked(media_env):
    before = money(media_env)
    base = {"model": "tts-1", "voice": "alloy", "input": "Hi"}
    for change, param in [
        ({"input": ""}, "input"),
        ({"voice": None}, "voice"),
        ({"voice": {"name": "x"}}, "voice"),
        ({"response_format": "ogg"}, "response_format"),
        ({"speed": 5}, "speed"),
        ({"stream_format": "chunks"}, "stream_format"),
    ]:
        body = {k: v for k, v in {**base, **change}.items() if v is not None}
        assert error_of(media_env.post("/v1/audio/speech", json=body), 400)["param"] == param
    with pytest.raises(openai.BadRequestError):
        media_env.client.audio.speech.create(model="tts-1", voice="alloy", input="")
    assert media_env.upstream.calls == 0
    assert money(media_env) == before
