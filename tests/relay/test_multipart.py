"""Multipart uploads are read from the body already in memory: file parts are views of
it, never copies, and a malformed body is a 400 naming what is wrong."""

import pytest

from relay.dialects.multipart import Upload, parse_form
from relay.errors import ApiError

BOUNDARY = "----tollgate-test-7d1f"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def form(*parts: tuple[str, bytes, str | None]) -> bytes:
    """A multipart body: (name, value, filename or None) per part."""
    out = b""
    for name, value, filename in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: audio/wav\r\n"
        out += b"\r\n" + value + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def test_fields_and_files_are_read_and_files_are_views_of_the_body():
    audio = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n"
    raw = form(
        ("model", b"whisper-1", None),
        ("file", audio, "speech.wav"),
        ("timestamp_granularities[]", b"word", None),
        ("timestamp_granularities[]", b"segment", None),
        ("prompt", "naïve café".encode(), None),
    )
    fields = parse_form(raw, CTYPE)
    assert fields["model"] == "whisper-1"
    assert fields["prompt"] == "naïve café"
    assert fields["timestamp_granularities[]"] == ["word", "segment"]
    upload = fields["file"]
    assert isinstance(upload, Upload)
    assert (upload.filename, upload.content_type, upload.size) == (
        "speech.wav",
        "audio/wav",
        len(audio),
    )
    assert bytes(upload.data) == audio
    # Not a copy: the view's memory is the body's.
    assert upload.data.obj is raw


def test_a_bytearray_body_is_read_alike():
    raw = bytearray(form(("model", b"m", None), ("file", b"\x00\x01", "a.wav")))
    fields = parse_form(raw, CTYPE)
    assert bytes(fields["file"].data) == b"\x00\x01" and fields["file"].data.obj is raw


@pytest.mark.parametrize(
    "body, ctype",
    [
        (b'{"model": "whisper-1"}', "application/json"),
        (form(("model", b"m", None)), "multipart/form-data"),  # no boundary
        (b"no boundary anywhere", CTYPE),
        (form(("model", b"m", None))[:-12], CTYPE),  # ends inside a part
        (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
            CTYPE,
        ),
        (f"--{BOUNDARY}\r\nno headers here\r\n--{BOUNDARY}--".encode(), CTYPE),
        (form(("prompt", b"\xff\xfe", None)), CTYPE),  # not UTF-8
    ],
)
def test_malformed_bodies_are_a_400(body, ctype):
    with pytest.raises(ApiError) as refused:
        parse_form(body, ctype)
    assert refused.value.status == 400


def test_a_body_of_too_many_parts_is_refused():
    raw = form(*[(f"f{i}", b"x", None) for i in range(300)])
    with pytest.raises(ApiError):
        parse_form(raw, CTYPE)
