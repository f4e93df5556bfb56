"""Provider adapters: one chat-completions call to one channel.

An adapter either returns the upstream's answer or raises ``UpstreamFailure``.
Failures raised before anything reached the client may be retried on another
channel when ``retryable`` is set.
"""

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from core.money import TokenCounts

from . import client, mock, sse
from .errors import ApiError
from .normalize import tokens_from_openai
from .selectors import ChannelInfo


class UpstreamFailure(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str = "upstream_error",
        retryable: bool = True,
        client_error: ApiError | None = None,
        upstream_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retryable = retryable
        # Set when the upstream refused the request itself (a 4xx the caller caused):
        # the caller gets that error, not a gateway error.
        self.client_error = client_error
        self.upstream_status = upstream_status


@dataclass(slots=True)
class UpstreamReply:
    body: dict[str, Any]
    upstream_usage: dict[str, Any] | None
    tokens: TokenCounts | None


class UpstreamStreamError(Exception):
    """The upstream failed after its stream had started."""

    def __init__(self, message: str, code: str = "upstream_stream_failed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(slots=True)
class StreamEvent:
    """One ``chat.completion.chunk``. ``raw`` holds the exact SSE bytes received when
    the event may be forwarded unchanged."""

    data: dict[str, Any]
    raw: bytes | None = None


class UpstreamStream(Protocol):
    def __aiter__(self) -> AsyncIterator[StreamEvent]: ...

    async def aclose(self) -> None: ...


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


async def send(
    channel: ChannelInfo, url: str, body: dict[str, Any], headers: dict[str, str]
) -> client.UpstreamResponse:
    """POST to the upstream; any HTTP error status becomes an UpstreamFailure."""
    try:
        response = await client.post(
            url, orjson.dumps(body), headers, read_timeout=channel.request_timeout
        )
    except client.TransportTimeout:
        raise UpstreamFailure(
            504, "The upstream provider timed out.", code="upstream_timeout"
        ) from None
    except client.TransportError:
        raise UpstreamFailure(
            502, "The upstream provider could not be reached.", code="upstream_unreachable"
        ) from None
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
    except client.TransportTimeout:
        raise UpstreamFailure(
            504, "The upstream provider timed out.", code="upstream_timeout"
        ) from None
    except client.TransportError:
        raise UpstreamFailure(
            502, "The upstream provider's answer broke off.", code="upstream_failed"
        ) from None
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


# Headers a caller may send for the provider (betas, an API version); each provider
# takes the ones with its prefix and ignores the rest.
FORWARDED_HEADERS = ("anthropic-beta", "anthropic-version", "openai-beta")
Forwarded = Mapping[str, str] | None


def forwarded_for(forwarded: Forwarded, prefix: str) -> dict[str, str]:
    return {k: v for k, v in (forwarded or {}).items() if k.startswith(prefix)}


class OpenAIAdapter:
    """Any OpenAI-compatible endpoint (``/chat/completions``, ``/embeddings``)."""

    @staticmethod
    def _headers(channel: ChannelInfo, stream: bool, forwarded: Forwarded) -> dict[str, str]:
        return {
            **forwarded_for(forwarded, "openai-"),
            "authorization": f"Bearer {channel.api_key}",
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
        }

    async def _json(
        self, channel: ChannelInfo, body: dict[str, Any], path: str, forwarded: Forwarded
    ) -> UpstreamReply:
        response = await send(
            channel, f"{channel.base_url}{path}", body, self._headers(channel, False, forwarded)
        )
        data = await read_json(response)
        usage = data.get("usage")
        if not isinstance(usage, dict):
            usage = None
        return UpstreamReply(
            body=data, upstream_usage=usage, tokens=tokens_from_openai(usage) if usage else None
        )

    async def complete(
        self, channel: ChannelInfo, body: dict[str, Any], forwarded: Forwarded = None
    ) -> UpstreamReply:
        return await self._json(channel, body, "/chat/completions", forwarded)

    async def embeddings(
        self, channel: ChannelInfo, body: dict[str, Any], forwarded: Forwarded = None
    ) -> UpstreamReply:
        return await self._json(channel, body, "/embeddings", forwarded)

    async def open_stream(
        self, channel: ChannelInfo, body: dict[str, Any], forwarded: Forwarded = None
    ) -> UpstreamStream:
        response = await send(
            channel,
            f"{channel.base_url}/chat/completions",
            body,
            self._headers(channel, True, forwarded),
        )
        return OpenAIStream(response)


class OpenAIStream:
    """The chunks of an OpenAI-compatible SSE stream, as they arrive."""

    def __init__(self, response: client.UpstreamResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        decoder = sse.SSEDecoder()
        finished = False
        try:
            async for chunk in self._response.chunks():
                for event in decoder.feed(chunk):
                    parsed = _parse_event(event)
                    if parsed is None:
                        continue
                    if parsed is sse.DONE:
                        return
                    if any(
                        isinstance(c, dict) and c.get("finish_reason")
                        for c in parsed.get("choices") or ()
                    ):
                        finished = True
                    yield StreamEvent(data=parsed, raw=event + b"\n\n")
        except client.TransportTimeout:
            raise UpstreamStreamError(
                "The upstream provider stopped sending.", "upstream_timeout"
            ) from None
        except client.TransportError:
            raise UpstreamStreamError("The upstream provider's stream broke off.") from None
        tail = decoder.flush()
        if tail is not None and _parse_event(tail) is sse.DONE:
            return
        if not finished:
            raise UpstreamStreamError("The upstream provider's stream ended early.")

    async def aclose(self) -> None:
        # Dropping an unfinished response's connection is how the upstream learns the
        # request was cancelled and stops generating.
        self._response.close()


def _parse_event(event: bytes) -> Any:
    data = sse.event_data(event)
    if data is None:
        return None
    if data.strip() == sse.DONE:
        return sse.DONE
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamStreamError("The upstream provider sent a malformed event.") from None
    if not isinstance(parsed, dict):
        raise UpstreamStreamError("The upstream provider sent a malformed event.")
    if "error" in parsed and "choices" not in parsed:
        raise UpstreamStreamError("The upstream provider reported an error mid-stream.")
    return parsed


class MockStream:
    def __init__(self, body: dict[str, Any]) -> None:
        self._chunks = mock.completion_chunks(body)

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        try:
            async for chunk in self._chunks:
                yield StreamEvent(data=chunk)
        except mock.MockStreamBroken as exc:
            raise UpstreamStreamError(str(exc)) from None

    async def aclose(self) -> None:
        await self._chunks.aclose()


class MockAdapter:
    """The built-in offline upstream."""

    @staticmethod
    def _checked(channel: ChannelInfo, body: dict[str, Any]) -> dict[str, Any]:
        """The request's mock options; a scripted failure status, or an option the
        mock refuses, fails the call as that upstream answer would."""
        try:
            opts = mock.options(body)
        except mock.MockRequestInvalid as exc:
            raise _mock_refused(channel, exc) from None
        status = opts.get("status")
        if status is not None:
            raise failure_from_status(status, b'{"error": {"message": "mock failure"}}', channel)
        return opts

    async def complete(
        self, channel: ChannelInfo, body: dict[str, Any], forwarded: Forwarded = None
    ) -> UpstreamReply:
        opts = self._checked(channel, body)
        if opts.get("delay_ms"):
            await asyncio.sleep(opts["delay_ms"] / 1000)
        data = mock.completion(body)
        usage = data.get("usage")
        return UpstreamReply(
            body=data, upstream_usage=usage, tokens=tokens_from_openai(usage) if usage else None
        )

    async def open_stream(
        self, channel: ChannelInfo, body: dict[str, Any], forwarded: Forwarded = None
    ) -> UpstreamStream:
        self._checked(channel, body)
        return MockStream(body)

    async def embeddings(
        self, channel: ChannelInfo, body: dict[str, Any], forwarded: Forwarded = None
    ) -> UpstreamReply:
        self._checked(channel, body)
        try:
            data = mock.embeddings(body)
        except mock.MockRequestInvalid as exc:
            raise _mock_refused(channel, exc) from None
        usage = data["usage"]
        return UpstreamReply(
            body=data, upstream_usage=usage, tokens=TokenCounts(input=usage["prompt_tokens"])
        )


def _mock_refused(channel: ChannelInfo, exc: "mock.MockRequestInvalid") -> UpstreamFailure:
    payload = {"error": {"message": str(exc), "type": "invalid_request_error", "param": exc.param}}
    return failure_from_status(400, orjson.dumps(payload), channel)
