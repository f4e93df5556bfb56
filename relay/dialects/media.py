"""What the media endpoints (images, audio, rerank, moderations) share: form fields
read as the values they stand for, uploads checked by their leading bytes, and the
``usage`` object of their answers.

A multipart form carries every field as text (the OpenAI SDKs send ``n=2`` as
``"2"`` and ``stream=True`` as ``"true"``); the helpers here read such a field or
raise a 400 naming it. An upload must be a file of the kind the endpoint takes, in
a format its leading bytes show; one that says which format it is (by its content
type, else by its file name) must be that format.
"""

import math
from typing import Any

from core.money import Units, pico_to_usd

from ..errors import invalid_request
from .base import PROMPT_OVERHEAD_TOKENS
from .multipart import Upload
from .usage import units_beyond_tokens

MEBIBYTE = 1024 * 1024

# -- form fields ---------------------------------------------------------------------


def form_text(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    """A text field (None when absent); a file or a repeated field is a 400."""
    value = body.get(name)
    if value is None:
        if required:
            raise invalid_request(f"You must provide `{name}`.", param=name)
        return None
    if not isinstance(value, str):
        raise invalid_request(f"`{name}` must be a single text field.", param=name)
    if required and not value.strip():
        raise invalid_request(f"`{name}` must not be empty.", param=name)
    return value


def form_choice(body: dict[str, Any], name: str, choices: tuple[str, ...]) -> str | None:
    value = form_text(body, name)
    if value is not None and value not in choices:
        raise invalid_request(f"`{name}` must be one of {', '.join(choices)}.", param=name)
    return value


def form_flag(body: dict[str, Any], name: str) -> bool:
    """A boolean field: ``true`` or ``false`` as text, or a JSON boolean."""
    value = body.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    if value in ("true", "false"):
        return value == "true"
    raise invalid_request(f"`{name}` must be true or false.", param=name)


def form_int(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    """A whole number from ``low`` to ``high``, as text or JSON."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 12:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise invalid_request(f"`{name}` must be a whole number from {low} to {high}.", param=name)
    return value


def form_number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    """A number from ``low`` to ``high``, as text or JSON."""
    value = body.get(name)
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and len(value) < 32:
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or not low <= number <= high:
        raise invalid_request(f"`{name}` must be a number from {low:g} to {high:g}.", param=name)
    return number


def form_prompt_estimate(body: dict[str, Any]) -> int:
    """An upper bound of a form's prompt tokens from its text fields alone: its files
    are billed in their own units (seconds of audio, images)."""
    size = 0
    for value in body.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                size += len(item.encode())
    return size // 3 + PROMPT_OVERHEAD_TOKENS


# -- uploads -------------------------------------------------------------------------

# The audio formats known by their leading bytes (``sniffed``).
AUDIO_FORMATS = ("flac", "mp3", "mp4", "ogg", "wav", "webm")

# The format each content type and file extension an upload may give names.
_MEDIA_TYPES = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/vnd.wave": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mpga": "mp3",
    "audio/mpeg3": "mp3",
    "audio/x-mpeg-3": "mp3",
    "audio/mp4": "mp4",
    "audio/m4a": "mp4",
    "audio/x-m4a": "mp4",
    "video/mp4": "mp4",
    "audio/ogg": "ogg",
    "audio/opus": "ogg",
    "application/ogg": "ogg",
    "video/ogg": "ogg",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/webm": "webm",
    "video/webm": "webm",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/pjpeg": "jpeg",
    "image/webp": "webp",
    "image/gif": "gif",
}
_EXTENSIONS = {
    "wav": "wav",
    "mp3": "mp3",
    "mpeg": "mp3",
    "mpga": "mp3",
    "mp4": "mp4",
    "m4a": "mp4",
    "ogg": "ogg",
    "oga": "ogg",
    "opus": "ogg",
    "flac": "flac",
    "webm": "webm",
    "png": "png",
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "webp": "webp",
    "gif": "gif",
}


def sniffed(data: memoryview) -> str | None:
    """The format the leading bytes show (audio or image), if any."""
    head = bytes(data[:12])
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:3] == b"ID3":
        return "mp3"
    # An MPEG audio frame: 11 sync bits, then a layer other than "reserved" (ADTS AAC,
    # which also starts with the sync bits, has layer 00).
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06:
        return "mp3"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def claimed(upload: Upload) -> str | None:
    """The format an upload says it is: its content type, else its file name's
    extension (None: it does not say, as ``application/octet-stream`` does not)."""
    media_type = upload.content_type.split(";")[0].strip().lower()
    if media_type in _MEDIA_TYPES:
        return _MEDIA_TYPES[media_type]
    _, dot, extension = upload.filename.rpartition(".")
    return _EXTENSIONS.get(extension.lower()) if dot else None


def upload_checked(upload: Any, name: str, kind: str, formats: tuple[str, ...]) -> str:
    """The format of the upload in field ``name``: one of ``formats`` by its leading
    bytes, and the one it says it is. Anything else is a 400 naming the field."""
    if not isinstance(upload, Upload):
        raise invalid_request(f"`{name}` must be a file upload.", param=name)
    if upload.size == 0:
        raise invalid_request(f"`{name}` is an empty file.", param=name)
    found = sniffed(upload.data)
    said = claimed(upload)
    if found is None or found not in formats:
        raise invalid_request(
            f"`{name}` is not {kind} in a supported format ({', '.join(formats)}).",
            param=name,
            code="invalid_file_format",
        )
    if said is not None and said != found:
        raise invalid_request(
            f"`{name}` says it is {said} ({upload.content_type}, {upload.filename!r}) "
            f"but its bytes are {found}.",
            param=name,
            code="invalid_file_format",
        )
    return found


def uploads_of(body: dict[str, Any], name: str) -> list[Any]:
    """The parts sent as ``name`` or ``name[]``, one or several."""
    values: list[Any] = []
    for key in (name, f"{name}[]"):
        value = body.get(key)
        if value is not None:
            values.extend(value if isinstance(value, list) else [value])
    return values


# -- answers -------------------------------------------------------------------------


def media_usage(units: Units, cost: int, upstream_usage: dict[str, Any] | None) -> dict[str, Any]:
    """The ``usage`` of a media answer: the upstream's own fields kept as they were,
    the token totals under OpenAI's names when there are any (``input_tokens`` every
    prompt token, ``output_tokens`` every completion token), the units billed beyond
    tokens (images, seconds of audio, characters, search units) and the ``cost``
    (exact USD; ``cost`` is in pico-USD here)."""
    out: dict[str, Any] = dict(upstream_usage) if upstream_usage else {}
    if units.prompt or units.completion:
        out["input_tokens"] = units.prompt
        out["output_tokens"] = units.completion
        out.setdefault("total_tokens", units.total)
    out.update(units_beyond_tokens(units))
    out["cost"] = pico_to_usd(cost)
    return out
