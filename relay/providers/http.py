"""Sending a JSON request to an upstream over HTTP, and what its errors become.

Shared by the providers that speak HTTP: every HTTP error status becomes an
``UpstreamFailure`` with a gateway code, and anything an upstream sends back that
reaches the caller is stripped of credentials first.
"""

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import orjson

from .. import sse
from ..dialects.base import StreamEvent
from ..dialects.multipart import Upload
from ..errors import ApiError
from ..selectors import ChannelInfo
from . import client
from .base import Forwarded, UpstreamFailure, UpstreamStreamError

_SECRET_PATTERNS = [
    (re.compile(r"sk-[A-Za-z0-9_\-\*\.]{6,}"), "sk-***"),
    (re.compile(r"(https?://)[^/\s:@]+:[^/\s@]+@"), r"\1***@"),
    (re.compile(r"(?i)bearer\s+[A-Za-z0-9_\-\.]+"), "Bearer ***"),
]
# Upstreams echo a key they refuse in part ("sk-proj-abc…wxyz"): any run this long of
# the channel's key is masked too.
_KEY_FRAGMENT = 8


def _key_fragments(api_key: str) -> list[str]:
    if len(api_key) < 2 * _KEY_FRAGMENT:
        return [api_key] if api_key else []
    return [api_key, api_key[:_KEY_FRAGMENT], api_key[-_KEY_FRAGMENT:]]


def sanitize(text: str, channel: ChannelInfo, limit: int = 1000) -> str:
    """Strip anything that could be an upstream credential from text an upstream
    sent (every field of its error that reaches the caller goes through here): the
    channel's key, whole or in part, and anything shaped like a key, a bearer token
    or a URL with credentials."""
    for fragment in _key_fragments(channel.api_key):
        text = text.replace(fragment, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text[:limit]


def _upstream_error_message(content: bytes) -> tuple[str, str | None]:
    try:
        data = orjson.loads(content)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            param = err.get("param")
            return str(err.get("message") or ""), param if isinstance(param, str) else None
        if isinstance(err, str):
            return err, None
        # Cohere's shape: ``{"message": ...}``.
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return data["message"], None
    except orjson.JSONDecodeError:
        pass
    return "", None


def failure_from_status(status: int, content: bytes, channel: ChannelInfo) -> UpstreamFailure:
    message, param = _upstream_error_message(content)
    message = sanitize(message, channel)
    param = sanitize(param, channel, limit=200) if param else None
    if status in (401, 403):
        return UpstreamFailure(
            502,
            "The upstream provider refused the gateway's credentials.",
            code="upstream_auth_failed",
            upstream_status=status,
        )
    if status == 429:
        return UpstreamFailure(
            503,
            "The upstream provider is rate limiting.",
            code="upstream_rate_limited",
            upstream_status=status,
        )
    if status >= 500:
        return UpstreamFailure(
            502,
            f"The upstream provider failed with status {status}.",
            code="upstream_failed",
            upstream_status=status,
        )
    # Any other 4xx: the upstream rejected the request as sent; that is the caller's.
    return UpstreamFailure(
        400,
        message,
        retryable=False,
        upstream_status=status,
        client_error=ApiError(
            400 if status != 404 else 404,
            message or f"The upstream provider rejected the request (status {status}).",
            type="invalid_request_error",
            param=param,
            code="upstream_rejected",
        ),
    )


def _transport_failure(exc: client.TransportError, broken: str, code: str) -> UpstreamFailure:
    """A transport error before the answer was whole: a timeout, or ``broken``."""
    if isinstance(exc, client.TransportTimeout):
        return UpstreamFailure(504, "The upstream provider timed out.", code="upstream_timeout")
    return UpstreamFailure(502, broken, code=code)


async def send(
    channel: ChannelInfo, url: str, body: dict[str, Any], headers: dict[str, str]
) -> client.UpstreamResponse:
    """POST JSON to the upstream; any HTTP error status becomes an UpstreamFailure."""
    return await _post(channel, url, orjson.dumps(body), headers)


async def send_form(
    channel: ChannelInfo, url: str, fields: dict[str, Any], headers: dict[str, str]
) -> client.UpstreamResponse:
    """POST a multipart form to the upstream: text fields as they are (a list as the
    field repeated), uploads as file parts (their bytes are views of the caller's
    body, not copies). Any HTTP error status becomes an UpstreamFailure."""
    form = aiohttp.FormData(quote_fields=False)
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Upload):
                form.add_field(
                    name, item.data, filename=item.filename, content_type=item.content_type
                )
            else:
                form.add_field(name, item if isinstance(item, str) else orjson.dumps(item).decode())
    return await _post(
        channel, url, form, {k: v for k, v in headers.items() if k != "content-type"}
    )


async def _post(
    channel: ChannelInfo,
    url: str,
    body: bytes | aiohttp.FormData,
    headers: dict[str, str],
) -> client.UpstreamResponse:
    try:
        response = await client.post(url, body, headers, read_timeout=channel.request_timeout)
    except client.TransportError as exc:
        unreachable = "The upstream provider could not be reached."
        raise _transport_failure(exc, unreachable, "upstream_unreachable") from None
    if response.status >= 400:
        try:
            content = await response.read()
        except client.TransportError:
            content = b""
        raise failure_from_status(response.status, content, channel)
    return response


async def read_json(response: client.UpstreamResponse) -> dict[str, Any]:
    try:
        data = orjson.loads(await response.read())
    except client.TransportError as exc:
        broke = "The upstream provider's answer broke off."
        raise _transport_failure(exc, broke, "upstream_failed") from None
    except orjson.JSONDecodeError:
        raise UpstreamFailure(
            502,
            "The upstream provider sent an answer that is not JSON.",
            code="upstream_bad_response",
        ) from None
    if not isinstance(data, dict):
        raise UpstreamFailure(
            502, "The upstream provider sent an unexpected answer.", code="upstream_bad_response"
        )
    return data


async def read_raw(response: client.UpstreamResponse) -> tuple[bytes, str]:
    """A whole answer that is not JSON: its bytes and content type."""
    try:
        return await response.read(), response.content_type
    except client.TransportError as exc:
        broke = "The upstream provider's answer broke off."
        raise _transport_failure(exc, broke, "upstream_failed") from None


class ByteStream:
    """An answer of bytes that are not events (audio), relayed as they arrive: each
    chunk is an event with the bytes in ``raw``."""

    def __init__(self, response: client.UpstreamResponse) -> None:
        self._response = response
        self.content_type = response.content_type

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        try:
            async for chunk in self._response.chunks():
                if chunk:
                    yield StreamEvent(data={}, raw=chunk)
        except client.TransportTimeout:
            raise UpstreamStreamError(
                "The upstream provider stopped sending.", "upstream_timeout"
            ) from None
        except client.TransportError:
            raise UpstreamStreamError("The upstream provider's answer broke off.") from None

    async def aclose(self) -> None:
        self._response.close()


async def sse_events(
    response: client.UpstreamResponse,
) -> AsyncIterator[tuple[bytes, bytes, bool]]:
    """The events of an SSE response as they arrive: (the event's exact bytes, its
    ``data``, whether the event was terminated), comments and data-less events
    skipped. An unterminated last event (the stream ended inside it) comes last,
    unterminated. Transport failures become UpstreamStreamError."""
    decoder = sse.SSEDecoder()
    try:
        async for chunk in response.chunks():
            for event in decoder.feed(chunk):
                data = sse.event_data(event)
                if data is not None:
                    yield event, data, True
    except client.TransportTimeout:
        raise UpstreamStreamError(
            "The upstream provider stopped sending.", "upstream_timeout"
        ) from None
    except client.TransportError:
        raise UpstreamStreamError("The upstream provider's stream broke off.") from None
    tail = decoder.flush()
    data = sse.event_data(tail) if tail is not None else None
    if tail is not None and data is not None:
        yield tail, data, False


def json_event(data: bytes) -> dict[str, Any]:
    """One event's data as a JSON object; anything else breaks the stream."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamStreamError("The upstream provider sent a malformed event.") from None
    if not isinstance(parsed, dict):
        raise UpstreamStreamError("The upstream provider sent a malformed event.")
    return parsed


def forwarded_for(forwarded: Forwarded, names: tuple[str, ...]) -> dict[str, str]:
    """The caller's headers among ``names``."""
    return {k: v for k, v in (forwarded or {}).items() if k in names}


def probe_get(url: str, headers: dict[str, str]) -> int | None:
    """The status of a GET (None: unreachable), for a provider's health probe."""
    try:
        return httpx.get(url, headers=headers, timeout=5.0).status_code
    except httpx.HTTPError:
        return None
