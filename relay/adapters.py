"""Provider adapters: one chat-completions call to one channel.

An adapter either returns the upstream's answer or raises ``UpstreamFailure``.
Failures raised before anything reached the client may be retried on another
channel when ``retryable`` is set.
"""

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from django.conf import settings

from billing.pricing import TokenCounts

from . import mock
from .client import upstream_client
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


_SECRET_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-\*\.]{6,}"),
    re.compile(r"(https?://)[^/\s:@]+:[^/\s@]+@"),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9_\-\.]+"),
]


def sanitize(message: str, channel: ChannelInfo) -> str:
    """Strip anything that could be an upstream credential from an upstream message."""
    if channel.api_key:
        message = message.replace(channel.api_key, "***")
    message = _SECRET_PATTERNS[0].sub("sk-***", message)
    message = _SECRET_PATTERNS[1].sub(r"\1***@", message)
    message = _SECRET_PATTERNS[2].sub("Bearer ***", message)
    return message[:1000]


def _upstream_error_message(response: httpx.Response) -> tuple[str, str | None]:
    try:
        data = orjson.loads(response.content)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            return str(err.get("message") or ""), err.get("param")
        if isinstance(err, str):
            return err, None
    except orjson.JSONDecodeError:
        pass
    return "", None


def failure_from_status(response: httpx.Response, channel: ChannelInfo) -> UpstreamFailure:
    status = response.status_code
    message, param = _upstream_error_message(response)
    message = sanitize(message, channel)
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
            param=param if isinstance(param, str) else None,
            code="upstream_rejected",
        ),
    )


class OpenAIAdapter:
    """Any OpenAI-compatible ``/chat/completions`` endpoint."""

    def _request(self, channel: ChannelInfo, body: dict[str, Any]) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if channel.request_timeout:
            cfg = settings.TOLLGATE
            extra["timeout"] = httpx.Timeout(
                connect=cfg["UPSTREAM_CONNECT_TIMEOUT"],
                read=channel.request_timeout,
                write=30.0,
                pool=cfg["UPSTREAM_CONNECT_TIMEOUT"],
            )
        return {
            **extra,
            "url": f"{channel.base_url}/chat/completions",
            "content": orjson.dumps(body),
            "headers": {
                "authorization": f"Bearer {channel.api_key}",
                "content-type": "application/json",
                "accept": "application/json",
            },
        }

    async def complete(self, channel: ChannelInfo, body: dict[str, Any]) -> UpstreamReply:
        try:
            response = await upstream_client().post(**self._request(channel, body))
        except httpx.TimeoutException:
            raise UpstreamFailure(
                504, "The upstream provider timed out.", code="upstream_timeout"
            ) from None
        except httpx.HTTPError:
            raise UpstreamFailure(
                502, "The upstream provider could not be reached.", code="upstream_unreachable"
            ) from None
        if response.status_code >= 400:
            raise failure_from_status(response, channel)
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(
                502,
                "The upstream provider sent an answer that is not JSON.",
                code="upstream_bad_response",
            ) from None
        if not isinstance(data, dict):
            raise UpstreamFailure(
                502,
                "The upstream provider sent an unexpected answer.",
                code="upstream_bad_response",
            )
        usage = data.get("usage")
        if not isinstance(usage, dict):
            usage = None
        return UpstreamReply(
            body=data, upstream_usage=usage, tokens=tokens_from_openai(usage) if usage else None
        )


class MockAdapter:
    """The built-in offline upstream."""

    async def complete(self, channel: ChannelInfo, body: dict[str, Any]) -> UpstreamReply:
        opts = mock.options(body)
        if opts.get("delay_ms"):
            await asyncio.sleep(float(opts["delay_ms"]) / 1000)
        status = opts.get("status")
        if isinstance(status, int) and status >= 400:
            fake = httpx.Response(status, json={"error": {"message": "mock failure"}})
            raise failure_from_status(fake, channel)
        data = mock.completion(body)
        usage = data.get("usage")
        return UpstreamReply(
            body=data, upstream_usage=usage, tokens=tokens_from_openai(usage) if usage else None
        )


ADAPTERS: dict[str, OpenAIAdapter | MockAdapter] = {
    "openai": OpenAIAdapter(),
    "mock": MockAdapter(),
}


def adapter_for(channel: ChannelInfo) -> OpenAIAdapter | MockAdapter:
    return ADAPTERS[channel.type]
