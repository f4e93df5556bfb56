"""What every provider is: the ``Provider`` protocol and what passes through it.

A provider speaks to one kind of upstream (a channel's ``type``). The lifecycle
hands it a ``Call``: a request in the wire format of the endpoint the client called
(its dialect), already addressed to the channel's name for the model. The provider
builds the upstream request, translating it if the upstream speaks another format,
sends it, and gives back the answer (``UpstreamReply``) or the stream of events
(``UpstreamStream``) in the dialect's format again, with the usage the upstream
reported read into token kinds. It refuses with ``UpstreamFailure``; a stream that
breaks after it began raises ``UpstreamStreamError``.
"""

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..dialects.base import StreamEvent, UpstreamReply
from ..errors import ApiError
from ..selectors import ChannelInfo

# Headers the caller sent for the provider (``Provider.forwarded_headers``).
Forwarded = Mapping[str, str] | None


@dataclass(frozen=True, slots=True)
class Call:
    """One call to one channel. ``body`` is in the wire format of ``dialect`` (the
    name of the endpoint the client called) with the upstream's model name in it;
    ``model`` is the public name, which a translated answer carries."""

    dialect: str
    channel: ChannelInfo
    body: dict[str, Any]
    model: str
    forwarded: Forwarded = None


class UpstreamStream(Protocol):
    def __aiter__(self) -> AsyncIterator[StreamEvent]: ...

    async def aclose(self) -> None: ...


class UpstreamFailure(Exception):
    """The call failed before anything reached the client. ``retryable``: another
    channel may be tried. ``client_error``: the upstream refused the request itself
    (a 4xx the caller caused), and the caller gets that error."""

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
        self.client_error = client_error
        self.upstream_status = upstream_status


class UpstreamStreamError(Exception):
    """The upstream failed after its stream had started."""

    def __init__(self, message: str, code: str = "upstream_stream_failed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Provider(Protocol):
    """One kind of upstream. Register an instance in ``relay.providers``."""

    # The channel ``type`` it serves, and how the admin names it.
    name: str
    label: str
    # The dialects (endpoint names) it can serve.
    dialects: frozenset[str]
    # Whether a channel of this type needs a base URL and an upstream key, and whether
    # the upstream charges for what it serves (then the channel needs cost prices).
    needs_base_url: bool
    charges: bool
    # Headers a caller may send for this provider (betas, an API version): they go
    # along with the call.
    forwarded_headers: tuple[str, ...]

    async def answer(self, call: Call) -> UpstreamReply:
        """The whole answer; raises UpstreamFailure."""
        ...

    async def stream(self, call: Call) -> UpstreamStream:
        """The stream once the upstream accepted the request; raises UpstreamFailure
        before that, UpstreamStreamError while iterating."""
        ...

    def probe(self, base_url: str, api_key: str) -> int | None:
        """Whether the upstream is back: the HTTP status of a cheap request (None:
        unreachable). Runs on a worker, synchronously."""
        ...
