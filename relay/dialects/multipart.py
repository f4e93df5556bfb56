"""``multipart/form-data`` bodies (file uploads), read from the bytes already in memory.

The whole body is in memory once (the ASGI handler reads it, up to the endpoint's
limit); each file part is a ``memoryview`` of it, never a copy, and nothing is
written to disk. A body that is not well-formed multipart is a 400 naming what is
wrong.
"""

from dataclasses import dataclass
from typing import Any

from django.utils.http import parse_header_parameters

from ..errors import invalid_request

# Parts beyond this are refused: no endpoint takes more than a few fields and files.
MAX_PARTS = 256


@dataclass(frozen=True, slots=True)
class Upload:
    """A file part: its name as sent, its declared type and its bytes (a view of the
    request body)."""

    filename: str
    content_type: str
    data: memoryview

    @property
    def size(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"<Upload {self.filename!r} {self.content_type} {self.size} bytes>"


def is_multipart(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.split(";")[0].strip().lower() == "multipart/form-data"


def parse_form(raw: bytes | bytearray, content_type: str | None) -> dict[str, Any]:
    """The form's fields: text fields as strings (a repeated name, or one ending in
    ``[]``, as a list of strings), file parts as ``Upload``s."""
    if not is_multipart(content_type):
        raise invalid_request(
            "This endpoint takes a multipart/form-data body (a file upload).", param=None
        )
    assert content_type is not None
    _, params = parse_header_parameters(content_type)
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise invalid_request("The multipart body has no boundary in its Content-Type.")
    delimiter = b"--" + boundary.encode("latin-1")
    body = memoryview(raw)
    start = raw.find(delimiter)
    if start < 0:
        raise invalid_request("The multipart body has none of its boundaries.")
    fields: dict[str, Any] = {}
    position = start + len(delimiter)
    parts = 0
    while True:
        if raw[position : position + 2] == b"--":
            return fields  # the closing delimiter
        if raw[position : position + 2] != b"\r\n":
            raise invalid_request("The multipart body is malformed after a boundary.")
        position += 2
        end = raw.find(b"\r\n" + delimiter, position)
        if end < 0:
            raise invalid_request("The multipart body ends inside a part.")
        parts += 1
        if parts > MAX_PARTS:
            raise invalid_request(f"The multipart body has more than {MAX_PARTS} parts.")
        _add_part(fields, raw, body, position, end)
        position = end + 2 + len(delimiter)


def _add_part(
    fields: dict[str, Any], raw: bytes | bytearray, body: memoryview, start: int, end: int
) -> None:
    head_end = raw.find(b"\r\n\r\n", start, end)
    if head_end < 0:
        raise invalid_request("A part of the multipart body has no headers.")
    headers: dict[str, str] = {}
    for line in raw[start:head_end].split(b"\r\n"):
        header, sep, text = line.partition(b":")
        if not sep:
            raise invalid_request("A part of the multipart body has a malformed header.")
        headers[header.strip().lower().decode("latin-1")] = text.strip().decode("utf-8", "replace")
    disposition, params = parse_header_parameters(headers.get("content-disposition", ""))
    name = params.get("name")
    if disposition.lower() != "form-data" or not name:
        raise invalid_request("A part of the multipart body has no form-data name.")
    data = body[head_end + 4 : end]
    if "filename" in params:
        value: Any = Upload(
            filename=params["filename"][:255],
            content_type=headers.get("content-type", "application/octet-stream")[:255],
            data=data,
        )
    else:
        try:
            value = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise invalid_request(f"`{name}` is not UTF-8 text.", param=name) from None
    if name.endswith("[]"):
        fields.setdefault(name, []).append(value)
    elif name in fields:
        previous = fields[name]
        fields[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
    else:
        fields[name] = value
