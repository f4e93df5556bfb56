"""The embedded demo's media models, served by the built-in mock and driven with the
official OpenAI client: every endpoint answers offline, in its real wire format, and
bills in its own unit at the demo's list prices."""

import base64
import csv
import io
import json
import math
import re
import wave

import httpx
import openai
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from mutagen.mp3 import MP3

from tests.support.media import png, settled, wav
from tests.support.relay import settle_in_flight


@pytest.fixture
def demo(transactional_db, tollgate_server, celery_worker_thread, settings, tmp_path):
    """The demo, seeded as ``bash scripts/run`` seeds it, and a client on its key."""
    settings.TOLLGATE_STATE_DIR = tmp_path
    call_command("tollgate_demo", stdout=io.StringIO())
    key = json.loads((tmp_path / "demo.json").read_text())["api_key"]
    with openai.OpenAI(
        base_url=f"{tollgate_server.url}/v1", api_key=key, max_retries=0, timeout=30
    ) as client:
        yield client
    settle_in_flight()


def test_images_come_back_as_pngs_and_are_billed_per_image(demo):
    as_b64 = demo.images.generate(
        model="dall-e-3",
        prompt="A lighthouse",
        n=2,
        response_format="b64_json",
        extra_headers={"x-request-id": "demo-dalle"},
    )
    by_url = demo.images.generate(model="dall-e-3", prompt="A lighthouse")

    assert all(base64.b64decode(i.b64_json).startswith(b"\x89PNG\r\n\x1a\n") for i in as_b64.data)
    assert as_b64.data[0].revised_prompt == "A lighthouse"
    assert by_url.data[0].url.startswith("data:image/png;base64,")
    assert as_b64.usage.model_extra["cost"] == "0.080000"
    assert settled("demo-dalle").unit_details == {"images": {"1024x1024/standard": 2}}


def test_gpt_image_reports_what_it_chose_and_its_tokens(demo):
    answer = demo.images.edit(
        model="gpt-image-1",
        image=[("a.png", png(), "image/png"), ("b.png", png(), "image/png")],
        prompt="Make it blue",
        extra_headers={"x-request-id": "demo-edit"},
    )

    assert (answer.size, answer.quality) == ("1024x1024", "medium")
    assert answer.usage.input_tokens_details.image_tokens == 2 * 323
    assert answer.usage.output_tokens == 1056
    record = settled("demo-edit")
    assert record.image_output_tokens == 1056 and record.image_input_tokens == 646
    assert record.unit_details == {"images": {"1024x1024/medium": 1}}
    # Image tokens at $10/M in and $40/M out, text at $5/M.
    text = record.input_tokens
    assert record.cost_pico == (text * 5 + 646 * 10 + 1056 * 40) * 10**6


def test_transcripts_come_in_every_format_billed_by_the_second(demo):
    clip = ("clip.wav", wav(3), "audio/wav")

    as_json = demo.audio.transcriptions.create(
        model="whisper-1", file=clip, extra_headers={"x-request-id": "demo-stt"}
    )
    verbose = demo.audio.transcriptions.create(
        model="whisper-1", file=clip, response_format="verbose_json"
    )
    text = demo.audio.transcriptions.create(model="whisper-1", file=clip, response_format="text")
    srt = demo.audio.transcriptions.create(model="whisper-1", file=clip, response_format="srt")
    vtt = demo.audio.transcriptions.create(model="whisper-1", file=clip, response_format="vtt")

    assert as_json.text == "This is the Tollgate mock transcript of 3 seconds of audio."
    assert as_json.usage.seconds == 3 and as_json.usage.model_extra["cost"] == "0.000300"
    assert verbose.duration == 3 and len(verbose.segments) == 3
    assert text.strip() == as_json.text
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,000\nThis is the")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n")
    assert settled("demo-stt").audio_ms == 3000


def test_a_gpt_transcription_streams_and_bills_its_tokens(demo):
    events = list(
        demo.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe",
            file=("clip.wav", wav(2), "audio/wav"),
            stream=True,
            extra_headers={"x-request-id": "demo-stream"},
        )
    )

    text = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert text == events[-1].text == "This is the Tollgate mock transcript of 2 seconds of audio."
    assert events[-1].usage.input_token_details.audio_tokens == 20
    record = settled("demo-stream")
    assert (
        record.audio_input_tokens == 20 and record.output_tokens == events[-1].usage.output_tokens
    )
    assert record.cost_pico == (20 * 3 + record.output_tokens * 5) * 10**6


def test_a_forms_mock_options_come_as_a_json_field(demo):
    said = demo.audio.transcriptions.create(
        model="whisper-1",
        file=("clip.wav", wav(1), "audio/wav"),
        extra_body={"mock": '{"reply": "Bonjour tout le monde"}'},
    )
    assert said.text == "Bonjour tout le monde"

    with pytest.raises(openai.InternalServerError):
        demo.audio.transcriptions.create(
            model="whisper-1",
            file=("clip.wav", wav(1), "audio/wav"),
            extra_body={"mock": '{"status": 500}'},
        )


@pytest.mark.parametrize("kind", ["mp3", "wav"])
def test_speech_is_valid_audio_streamed_in_chunks(demo, kind):
    text = "Tollgate meters every unit of usage."

    with demo.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="alloy",
        input=text,
        response_format=kind,
        extra_headers={"x-request-id": f"demo-tts-{kind}"},
    ) as response:
        chunks = list(response.iter_bytes(chunk_size=None))
    audio = b"".join(chunks)

    seconds = len(text) / 15
    if kind == "mp3":
        assert MP3(io.BytesIO(audio)).info.length == pytest.approx(seconds, abs=0.05)
    else:
        with wave.open(io.BytesIO(audio)) as read:
            assert read.getnframes() / read.getframerate() == pytest.approx(seconds, abs=0.01)
    assert len(chunks) > 1
    record = settled(f"demo-tts-{kind}")
    assert record.characters == len(text) and record.cost_pico == len(text) * 15 * 10**6


def test_speech_from_a_gpt_model_is_audio_billed_by_its_tokens(demo):
    text = "Tollgate meters every unit of usage."

    with demo.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="alloy",
        input=text,
        extra_headers={"x-request-id": "demo-gpt-tts"},
    ) as response:
        audio = response.read()

    seconds = len(text) / 15
    assert MP3(io.BytesIO(audio)).info.length == pytest.approx(seconds, abs=0.05)
    record = settled("demo-gpt-tts")
    # One audio token per 50 ms of speech, as the mock reports them.
    assert record.audio_output_tokens == math.ceil(seconds * 20) and not record.estimated
    # $0.60 per 1M text tokens, $12 per 1M audio tokens: in pico-USD per token.
    assert record.input_tokens > 0
    assert record.cost_pico == record.input_tokens * 600_000 + 48 * 12_000_000


def test_speech_in_a_format_the_mock_cannot_make_is_a_400_naming_it(demo):
    with pytest.raises(openai.BadRequestError) as refused:
        demo.audio.speech.create(model="tts-1", voice="alloy", input="Hi", response_format="aac")
    assert refused.value.body["param"] == "response_format"


def test_rerank_embeddings_and_moderations(demo):
    ranked = demo.post(
        "/rerank",
        body={
            "model": "rerank-v3.5",
            "query": "capital of France",
            "documents": ["Berlin is in Germany.", "Paris is the capital of France."],
            "top_n": 1,
        },
        cast_to=object,
        options={"headers": {"x-request-id": "demo-rerank"}},
    )
    vectors = demo.embeddings.create(model="text-embedding-3-small", input="hello")
    verdict = demo.moderations.create(input=["I will attack the castle", "I like tea"])

    assert ranked["results"][0]["index"] == 1
    assert ranked["usage"]["search_units"] == 1 and ranked["usage"]["cost"] == "0.002000"
    assert len(vectors.data[0].embedding) == 16
    assert [r.flagged for r in verdict.results] == [True, False]
    assert verdict.results[0].categories.violence is True
    assert verdict.model_extra["usage"]["cost"] == "0.000000"
    assert settled("demo-rerank").search_units == 1


def test_the_models_list_says_each_models_mode(demo, tollgate_server):
    key = demo.api_key
    listed = httpx.get(
        f"{tollgate_server.url}/v1/models", headers={"authorization": f"Bearer {key}"}
    ).json()
    modes = {m["id"]: m["mode"] for m in listed["data"]}
    assert {m: modes[m] for m in ("dall-e-3", "whisper-1", "tts-1", "rerank-v3.5")} == {
        "dall-e-3": "image_generation",
        "whisper-1": "audio_transcription",
        "tts-1": "audio_speech",
        "rerank-v3.5": "rerank",
    }
    assert modes["omni-moderation-latest"] == "moderation"


def test_the_console_shows_the_unit_billed_beside_the_tokens(demo):
    demo.images.generate(model="dall-e-3", prompt="A cat", n=2)
    demo.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(3)))
    demo.audio.speech.create(model="tts-1", voice="alloy", input="x" * 36)
    documents = ["a document"] * 250
    demo.post(
        "/rerank",
        body={"model": "rerank-v3.5", "query": "q", "documents": documents},
        cast_to=object,
    )
    settle_in_flight()
    member = Client()
    member.force_login(get_user_model().objects.get(username="demo"))

    log = member.get("/usage/").content.decode()
    for words in (
        "2 images (2 at 1024x1024 standard)",
        "3 s of audio",
        "36 characters",
        "3 search units",
    ):
        assert f'<div class="sub-line units">{words}</div>' in log
    rows = list(csv.DictReader(io.StringIO(b"".join(member.get("/usage/export.csv")).decode())))
    by_endpoint = {row["endpoint"]: row for row in rows}
    assert by_endpoint["images.generations"]["images"] == "2"
    assert (
        by_endpoint["images.generations"]["unit_details"] == '{"images":{"1024x1024/standard":2}}'
    )
    assert by_endpoint["audio.transcriptions"]["audio_seconds"] == "3"
    assert by_endpoint["audio.speech"]["characters"] == "36"
    assert by_endpoint["rerank"]["search_units"] == "3"
    assert by_endpoint["rerank"]["cost_usd"] == "0.006000"

    # A transcription model's row shows the token rates it has, none it would only
    # fall back to (it neither caches nor reasons).
    models = member.get("/models/").content.decode()
    row = models[models.index("gpt-4o-mini-transcribe") :].split("</tr>")[0]
    assert "Audio input tokens: $3.00 per 1M tokens" in row
    assert re.findall(r'<td class="num[^"]*">([^<]*)</td>', row) == [
        "$1.25",
        "$5.00",
        "—",
        "—",
        "—",
    ]
