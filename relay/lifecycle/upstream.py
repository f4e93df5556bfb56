"""Step 7: the upstream call, with the one failover loop.

The request's (model, channel) pairs are tried in routing order until one answers;
a failure before anything reached the client moves on to the next pair if it may
(``UpstreamFailure.retryable``). An answer is one call; a stream counts as
answered once its first event arrived, so a stream that fails before that fails
over like an answer. Every try is noted on the request (kept on its usage record).
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from ..dialects.base import StreamEvent, UpstreamReply
from ..providers import Call, UpstreamFailure, UpstreamStreamError, provider_for
from ..selectors import ChannelInfo
from .request import RelayRequest, Route
from .routing import candidates

T = TypeVar("T")


async def failover(
    request: RelayRequest, attempt: Callable[[Route, ChannelInfo], Awaitable[T]]
) -> tuple[T, Route, ChannelInfo]:
    """``attempt`` on each (model, channel) pair in turn until one succeeds; raises the
    last UpstreamFailure (or the first that may not be retried)."""
    failure: UpstreamFailure | None = None
    for route, channel in candidates(request):
        request.attempt_started(route, channel)
        try:
            result = await attempt(route, channel)
        except UpstreamFailure as exc:
            request.attempt_ended(exc.upstream_status or exc.status, exc.code)
            if not exc.retryable:
                raise
            failure = exc
            continue
        request.attempt_ended(200)
        return result, route, channel
    assert failure is not None
    raise failure


def _call(request: RelayRequest, route: Route, channel: ChannelInfo) -> Call:
    body = dict(request.body)
    body["model"] = channel.upstream_model(route.model)
    return Call(
        dialect=request.dialect.name,
        channel=channel,
        body=body,
        model=route.model,
        forwarded=request.forwarded,
    )


async def answer(request: RelayRequest) -> tuple[UpstreamReply, Route, ChannelInfo]:
    async def attempt(route: Route, channel: ChannelInfo) -> UpstreamReply:
        return await provider_for(channel.type).answer(_call(request, route, channel))

    return await failover(request, attempt)


Opened = tuple[AsyncIterator[StreamEvent], StreamEvent]


async def first_event(request: RelayRequest) -> tuple[Opened, Route, ChannelInfo]:
    """A stream that delivered its first event, and the rest of its events. The open
    stream belongs to the request from the moment it is opened (its ending closes it)."""

    async def attempt(route: Route, channel: ChannelInfo) -> Opened:
        stream = await provider_for(channel.type).stream(_call(request, route, channel))
        request.upstream = stream
        events = aiter(stream)
        try:
            return events, await anext(events)
        except (UpstreamStreamError, StopAsyncIteration) as exc:
            request.upstream = None
            await stream.aclose()
            code = exc.code if isinstance(exc, UpstreamStreamError) else "upstream_empty_stream"
            # Silence after the headers is a timeout like silence before them.
            if code == "upstream_timeout":
                raise UpstreamFailure(504, "The upstream provider timed out.", code=code) from None
            raise UpstreamFailure(
                502, "The upstream provider's stream failed before it began.", code=code
            ) from None

    return await failover(request, attempt)
