"""A request past authentication, and the one owner of everything it takes.

``RelayRequest`` holds its rate-limit admission, its hold, an open upstream stream,
and its usage record. It ends exactly once, through ``RelayRequest.end``, which
every way out calls: the answer, a refusal, a failed upstream, an exception
anywhere, a cancellation at any await (the client left, the server is stopping),
and, as the last resort, the end of the task that served it. The ending runs in a
task of its own that nothing cancels and the process waits for at shutdown. A step
that takes something (limit slots, the hold) runs to its end even if the request is
cancelled while waiting for it, and the ending collects what it took and gives it
back.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from accounts.selectors import AuthKey
from billing.pricing import Bill, Price
from billing.services import hold_granted
from core import inflight
from core.money import Units
from usage.models import UsageRecord

from .. import limits
from ..dialects import Dialect
from ..dialects.base import RequestParams
from ..errors import ApiError
from ..providers import UpstreamStream
from ..selectors import ChannelInfo
from .finish import finish

logger = logging.getLogger("tollgate.relay")

# Endings still running (records being written); kept referenced until done, and
# waited for when the server shuts down.
_endings: set[asyncio.Task] = set()
# Set when the server starts shutting down: a request cancelled from then on was
# stopped by the server, not by its client.
_shutting_down = False
# The message of the cancellation that the ASGI handler sends a request whose client
# left; a cancellation without it came from the server.
CLIENT_GONE = "client_disconnected"

# What a request knows of its parameters before its body is validated.
UNVALIDATED = RequestParams(
    model="", stream=False, include_usage=False, max_tokens=None, n=1, user=""
)


def ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


@dataclass(frozen=True, slots=True)
class Route:
    """One model the request may be served as, its price and its channels."""

    model: str
    price: Price
    channels: list[ChannelInfo]


@dataclass(slots=True)
class Outcome:
    """How a granted request ended."""

    status: str
    http_status: int
    route: Route | None = None
    channel: ChannelInfo | None = None
    error_code: str = ""
    tokens: Units = field(default_factory=Units)
    estimated: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: int = 0
    ttft_ms: int | None = None
    # The bill of ``tokens`` at the route's price, once it was made (the answer
    # carries its cost before the request ends).
    bill: Bill | None = None
    # What the channel's upstream charges for it, pico-USD, once it was made.
    upstream_cost: int | None = None
    # The answer served, for a dialect that keeps it (``Dialect.keeps``).
    answer: dict[str, Any] | None = None


async def _collected(step: asyncio.Future) -> Any:
    """The result of a step the request stopped waiting for; None if it failed."""
    try:
        return await step
    except (Exception, asyncio.CancelledError):
        return None


class RelayRequest:
    """A request past authentication, filled in as it goes: ``params`` and ``routes``
    once validated, ``admission`` and ``hold_id`` once taken, ``attempts`` as
    upstreams are tried."""

    __slots__ = (
        "_admitting",
        "_ending",
        "_reserving",
        "admission",
        "asked",
        "attempts",
        "body",
        "calling",
        "channel_pin",
        "client_ip",
        "dialect",
        "forwarded",
        "hold_amount",
        "hold_id",
        "key",
        "model_requested",
        "params",
        "priced_model",
        "prompt_estimate",
        "request_id",
        "routes",
        "started",
        "stopped_by",
        "trying",
        "upstream",
        "user",
    )

    def __init__(
        self,
        *,
        request_id: str,
        dialect: Dialect,
        key: AuthKey,
        client_ip: str | None,
        started: float,
        forwarded: dict[str, str] | None = None,
    ) -> None:
        self.request_id = request_id
        # Headers the caller sent for the provider (``providers.FORWARDED_HEADERS``).
        self.forwarded = forwarded or {}
        self.dialect = dialect
        self.key = key
        self.client_ip = client_ip
        self.started = started
        self.body: dict[str, Any] = {}
        self.params = UNVALIDATED
        # The model as the caller wrote it (trimmed to be stored), and the model once
        # it is known to be priced (a metrics label).
        self.model_requested = ""
        self.priced_model = ""
        self.user = ""
        self.routes: list[Route] = []
        # The one channel that may serve it (the one keeping the state it continues),
        # and the body as the client sent it when the state was expanded into it.
        self.channel_pin: int | None = None
        self.asked: dict[str, Any] | None = None
        self.prompt_estimate = 0
        self.admission: limits.Admission | None = None
        self.hold_id: int | None = None
        self.hold_amount = 0
        self.attempts: list[dict[str, Any]] = []
        # The (model, channel) tried last: the prompt went there. ``calling`` is when
        # that call started, while it is under way.
        self.trying: tuple[Route, ChannelInfo] | None = None
        self.calling: float | None = None
        # An upstream stream this request opened and has not closed.
        self.upstream: UpstreamStream | None = None
        self._admitting: asyncio.Future | None = None
        self._reserving: asyncio.Future | None = None
        self._ending: asyncio.Task | None = None
        # Why a cancelled request was stopped, once a cancellation was seen.
        self.stopped_by = ""

    @property
    def rate_headers(self) -> dict[str, str]:
        return self.admission.headers if self.admission is not None else {}

    def attempt_started(self, route: Route, channel: ChannelInfo) -> None:
        self.trying = (route, channel)
        self.calling = time.perf_counter()

    def attempt_ended(self, status: int, error: str = "") -> None:
        """Note how the call under way ended (kept on the usage record)."""
        assert self.trying is not None and self.calling is not None
        route, channel = self.trying
        attempt: dict[str, Any] = {
            "channel": channel.id,
            "model": route.model,
            "status": status,
            "ms": ms_since(self.calling),
        }
        if error:
            attempt["error"] = error
        self.attempts.append(attempt)
        self.calling = None

    def cancelled(self, exc: BaseException) -> None:
        """Note who stopped the request: its client, or the server."""
        if not self.stopped_by:
            by_client = isinstance(exc, asyncio.CancelledError) and CLIENT_GONE in exc.args
            self.stopped_by = CLIENT_GONE if by_client else "server_shutdown"

    @property
    def cancel_code(self) -> str:
        """Why a request cancelled now was stopped (its client leaving, unless a
        cancellation from the server was seen)."""
        if self.stopped_by:
            return self.stopped_by
        return "server_shutdown" if _shutting_down else CLIENT_GONE

    # -- what the request takes ---------------------------------------------------

    async def take_admission(self, step: "asyncio.Future[limits.Admission | None]") -> None:
        """Wait for the limits' admission; if this request is cancelled meanwhile,
        the admission still completes and the ending gives its slots back."""
        self._admitting = step
        try:
            self.admission = await asyncio.shield(step)
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._admitting = None
            raise
        self._admitting = None

    async def take_hold(self, step: "asyncio.Future[int]", amount: int) -> None:
        """Wait for the hold (the reservation's raw result); if this request is
        cancelled meanwhile, the reservation still completes and the ending releases
        a hold it granted. Raises HoldRefused."""
        self._reserving = step
        self.hold_amount = amount
        try:
            result = await asyncio.shield(step)
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._reserving = None
            raise
        self._reserving = None
        self.hold_id = hold_granted(result)
        inflight.started(self.hold_id)

    # -- the ending -----------------------------------------------------------------

    def end(
        self, outcome: Outcome | None = None, *, error: ApiError | None = None
    ) -> "asyncio.Task[tuple[int | None, int]]":
        """End the request, once: the first call decides how it ended (``outcome``;
        else ``error``, what the client was answered; else it was cancelled), later
        calls return the same ending. The ending runs in its own task, started here
        synchronously, so it is under way even when the caller is being cancelled;
        await it through ``asyncio.shield`` to wait for the usage record."""
        if self._ending is None:
            task = self._ending = asyncio.ensure_future(self._end(outcome, error))
            _endings.add(task)
            task.add_done_callback(self._ended)
        return self._ending

    def end_with(self, task: asyncio.Task | None) -> None:
        """The last resort: end the request (as cancelled, if nothing else ended it)
        when the task serving it is done, however that happened."""
        if task is not None:
            task.add_done_callback(lambda _: self.end())

    def _ended(self, task: asyncio.Task) -> None:
        _endings.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "request %s: its ending failed (%r); its hold, if any, is released when it expires",
                self.request_id,
                task.exception(),
                exc_info=task.exception(),
            )

    async def _end(self, outcome: Outcome | None, error: ApiError | None) -> tuple[int | None, int]:
        # Steps this request stopped waiting for still took what they took.
        if self._admitting is not None:
            self.admission = await _collected(self._admitting)
        if self._reserving is not None:
            result = await _collected(self._reserving)
            if isinstance(result, int) and result > 0:
                self.hold_id = result
        if self.upstream is not None:
            upstream, self.upstream = self.upstream, None
            try:
                await upstream.aclose()
            except Exception:
                logger.warning("closing the upstream stream of %s failed", self.request_id)
        if outcome is None:
            outcome = self._outcome_unanswered(error)
        try:
            return await finish(self, outcome)
        finally:
            if self.hold_id is not None:
                inflight.ended(self.hold_id)

    def _outcome_unanswered(self, error: ApiError | None) -> Outcome:
        """How a request ended that has no outcome of its own: answered with
        ``error``, or cancelled. A cancelled request is charged its prompt if the
        prompt reached an upstream (counted locally), nothing else."""
        route, channel = self.trying if self.trying is not None else (None, None)
        if error is not None:
            # A 4xx refuses the request (before or after its hold: a translation can
            # refuse content); a 5xx is the gateway failing.
            failed = error.status >= 500
            return Outcome(
                status=UsageRecord.Status.FAILED if failed else UsageRecord.Status.REJECTED,
                http_status=error.status,
                error_code=error.code or error.type,
                route=route,
                attempts=self.attempts,
                latency_ms=ms_since(self.started),
            )
        if self.calling is not None:
            self.attempt_ended(499)  # the call the client did not wait for
        tokens = Units()
        if self.trying is not None:
            try:
                tokens = self.dialect.prompt_units(self.params, self.body)
            except Exception:
                logger.exception("the prompt of %s could not be counted", self.request_id)
        return Outcome(
            status=UsageRecord.Status.CANCELLED,
            http_status=499,
            error_code=self.cancel_code,
            route=route,
            channel=channel,
            tokens=tokens,
            estimated=True,
            attempts=self.attempts,
            latency_ms=ms_since(self.started),
        )


async def endings_settled(timeout: float) -> None:
    """Wait (up to ``timeout`` seconds) until no request's ending is running; an
    ending may start another (a stream's safety net), so until none is left."""
    deadline = time.monotonic() + timeout
    while _endings and time.monotonic() < deadline:
        await asyncio.wait(set(_endings), timeout=max(0.0, deadline - time.monotonic()))


async def endings_done(timeout: float = 35.0) -> None:
    """At server shutdown: requests stopped from now on were stopped by the server;
    wait for the endings still running (usage records being written)."""
    global _shutting_down
    _shutting_down = True
    await endings_settled(timeout)
