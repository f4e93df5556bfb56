"""What every dialect is: one inbound wire format, from the request to the bill.

A dialect knows an endpoint's request (``validate``: only what the gateway must
understand; every other field goes upstream untouched), the units it bills and how
to count them locally when an upstream reports none, how its answers and stream
events are rendered with the billed usage and cost, and the shape of its errors.
Providers give answers and events back in the dialect's own format
(``UpstreamReply``, ``StreamEvent``); the lifecycle does the rest.
"""

from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from django.http import HttpResponse

from core.money import Units

from ..errors import ApiError, invalid_request

if TYPE_CHECKING:
    from ..selectors import ChannelInfo


@dataclass(frozen=True, slots=True)
class RequestParams:
    """What the gateway needs to know about a request, whatever its endpoint."""

    model: str
    stream: bool
    # The client asked for the usage chunk at the end of a stream.
    include_usage: bool
    # Completion tokens the request may produce (all choices); None: not set.
    max_tokens: int | None
    n: int
    user: str
    # Endpoint without any completion (embeddings).
    prompt_only: bool = False
    # The units beyond tokens the request is billed for that the request itself says
    # (seconds of an uploaded file, characters to speak, images asked for, search
    # units): held for before the call and billed with what the upstream reports.
    units: Units | None = None
    # The format the client asked its answer in, where its stream depends on it
    # (speech: the audio's ``response_format``, or ``sse``).
    answer_format: str = ""


@dataclass(slots=True)
class UpstreamReply:
    """An answer in the dialect's format. ``tokens``: the usage the upstream reported,
    by kind (None: it reported none). ``upstream_usage``: that usage in the dialect's
    own wire shape, kept in what the client gets. An answer that is not JSON (a
    transcript as text, subtitles) has its bytes in ``raw`` and its type in
    ``content_type``; ``body`` is then empty."""

    body: dict[str, Any]
    upstream_usage: dict[str, Any] | None
    tokens: Units | None
    raw: bytes | None = None
    content_type: str | None = None


@dataclass(slots=True)
class StreamEvent:
    """One event of a stream in the dialect's format. ``raw``: the exact SSE bytes
    received, when the event may be forwarded unchanged. ``usage``: the usage the
    upstream reported with this event, by kind (cumulative: the newest wins);
    ``usage_final`` once it is the whole request's, otherwise it covers the prompt
    only and the output is counted from what was delivered. A stream of bytes that
    are not events (audio) carries each chunk in ``raw`` with empty ``data``."""

    data: dict[str, Any]
    raw: bytes | None = None
    usage: Units | None = None
    usage_final: bool = False


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a request that refers to state the gateway keeps (a stored response it
    continues) turned out to be: the body to serve (the state expanded into it), the
    channel that must serve it (None: any), and the prompt tokens the expansion added
    at most (for the hold and the token limits)."""

    body: dict[str, Any]
    channel_id: int | None = None
    prompt_tokens: int = 0


# A request body as read: the bytes of one message, or the buffer it was read into.
Body = bytes | bytearray

# Framing overhead added to the byte-based prompt estimate used for holds and limits.
PROMPT_OVERHEAD_TOKENS = 16


def with_request_units(reported: Units, known: Units | None) -> Units:
    """The reported tokens with the units beyond tokens that the request itself says
    (``RequestParams.units``), where the upstream reported none of its own."""
    if known is None:
        return reported
    return replace(
        reported,
        images=reported.images or known.images,
        audio_ms=reported.audio_ms or known.audio_ms,
        characters=reported.characters or known.characters,
        search_units=reported.search_units or known.search_units,
        tool_calls=reported.tool_calls or known.tool_calls,
    )


def parse_json_object(raw: Body) -> dict[str, Any]:
    if not raw:
        raise invalid_request("The request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(
            f"We could not parse the JSON body of your request ({exc.msg} at position {exc.pos})."
        ) from None
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    try:
        # The parser accepts deeper nesting than the serialiser that forwards the body
        # upstream; refuse it here, before any money is held for it.
        orjson.dumps(body)
    except TypeError:
        raise invalid_request("The JSON body of your request is nested too deeply.") from None
    return body


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class Accounting:
    """What a stream is billed for: the upstream's usage if it reported all of it,
    otherwise its prompt (as reported, or counted locally) plus the text actually
    handed to the client, counted locally and flagged estimated. ``delivered`` is
    the dialect's: it reads the text out of the events the client received."""

    def __init__(self, dialect: "Dialect", body: dict[str, Any]) -> None:
        self._dialect = dialect
        self._body = body
        self.usage: Units | None = None
        self.final = False
        # The whole answer, where the events carry it (a Responses stream's last
        # event), for a dialect that keeps its answers (``Dialect.keep``).
        self.answer: dict[str, Any] | None = None

    def observe(self, event: StreamEvent) -> None:
        if event.usage is not None:
            self.usage, self.final = event.usage, event.usage_final

    def delivered(self, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def output(self) -> Units:
        """The delivered output, counted locally (output and reasoning kinds)."""
        raise NotImplementedError

    def tokens(self) -> tuple[Units, bool]:
        """(tokens, estimated)."""
        if self.usage is not None and self.final:
            return self.usage, False
        prompt = self.usage or Units(input=self._dialect.prompt_tokens(self._body))
        output = self.output()
        return replace(
            prompt,
            output=output.output,
            reasoning=output.reasoning,
            audio_output=output.audio_output,
            image_output=output.image_output,
        ), True


class StreamFormat(Protocol):
    """Writes a stream in the dialect's wire format: ``content_type`` is the
    response's."""

    content_type: str

    def event(self, event: StreamEvent) -> bytes | None:
        """The bytes to send for an upstream event (None: nothing, or held back)."""
        ...

    def end(self, tokens: Units, cost: int) -> bytes:
        """What ends a stream that completed: the billed usage and cost (pico-USD), a
        terminator."""
        ...

    def error(self, failure: ApiError) -> bytes | None:
        """The last event of a stream that failed after it began; None where the
        format has no way to say so (audio): the response is then broken off, so the
        client cannot mistake it for a whole one."""
        ...


class Dialect:
    """One inbound wire format. Subclasses set the class attributes and implement
    the request, counting and rendering methods."""

    # The endpoint's name (on usage records, in metrics) and path.
    name: str
    path: str
    # The mode of the models it serves (``ModelPrice.Mode``), for ``model: "auto"``.
    mode: str = "chat"
    # The largest body it takes (None: ``TOLLGATE["MAX_BODY_BYTES"]``); uploads
    # need more.
    max_body_bytes: int | None = None

    def __repr__(self) -> str:
        return f"<dialect {self.name}>"

    # -- the request --------------------------------------------------------------

    def key(self, authorization: str | None, x_api_key: str | None) -> str | None:
        """The caller's key, from the headers this wire format carries it in."""
        return bearer_token(authorization)

    def parse(self, raw: Body, content_type: str | None) -> dict[str, Any]:
        """The request body as the gateway reads it: a JSON object, unless the
        dialect takes another format (``multipart.parse_form`` for uploads)."""
        return parse_json_object(raw)

    def validate(self, body: dict[str, Any]) -> RequestParams:
        raise NotImplementedError

    def resolve(self, body: dict[str, Any], *, account_id: int) -> Awaitable[Resolved] | None:
        """For a request that refers to state the gateway keeps: a lookup (awaited
        before the request is routed) giving the body to serve and the channel it
        must go to; it raises ApiError when the state is not the account's. None: the
        request refers to nothing (no lookup, no I/O)."""
        return None

    def prompt_estimate(self, raw: Body, body: dict[str, Any]) -> int:
        """An upper bound of the prompt's tokens, for holds and token limits, from its
        size: no tokenizer on the hot path. An upload counts only its text fields."""
        return len(raw) // 3 + PROMPT_OVERHEAD_TOKENS

    # -- the units it bills, counted locally ----------------------------------------

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        """The prompt's tokens, counted locally (a request that reached an upstream
        and was cancelled, or whose upstream reported no usage)."""
        raise NotImplementedError

    def estimate(self, body: dict[str, Any], answer: dict[str, Any]) -> Units:
        """The tokens of an answer whose upstream reported no usage."""
        raise NotImplementedError

    def prompt_units(self, params: RequestParams, body: dict[str, Any]) -> Units:
        """What a request is billed for when its client left while the upstream had
        its prompt: the prompt's tokens, counted locally. A dialect whose upstream
        takes in more than text (seconds of audio, characters to speak) adds those."""
        return Units(input=self.prompt_tokens(body))

    def units(self, params: RequestParams, reported: Units, reply: UpstreamReply | None) -> Units:
        """What a served request is billed for: the tokens reported (or counted
        locally), with the units the request itself says (``params.units``). ``reply``
        is the whole answer (None for a stream). A dialect whose answer tells how
        many units were served (images returned) counts them here."""
        return with_request_units(reported, params.units)

    # -- answers and streams --------------------------------------------------------

    def render(self, reply: UpstreamReply, tokens: Units, cost: int) -> dict[str, Any]:
        """The answer the client gets, carrying the billed usage and cost (pico-USD)."""
        raise NotImplementedError

    def content(self, reply: UpstreamReply, tokens: Units, cost: int) -> tuple[bytes, str]:
        """The answer's bytes and content type: ``render`` as JSON, or an answer that
        is not JSON as the upstream sent it."""
        if reply.raw is not None:
            return reply.raw, reply.content_type or "application/octet-stream"
        return orjson.dumps(self.render(reply, tokens, cost)), "application/json"

    def accounting(self, body: dict[str, Any]) -> Accounting:
        raise NotImplementedError

    def keeps(self, body: dict[str, Any]) -> bool:
        """Whether the answer to this request is kept (``keep``) once it was served;
        its request then ends before the answer is sent, so that a follow-up made as
        soon as the answer arrives finds it."""
        return False

    async def keep(
        self,
        *,
        body: dict[str, Any],
        answer: dict[str, Any],
        tokens: Units,
        cost: int,
        account_id: int,
        channel: "ChannelInfo",
    ) -> None:
        """Keep a served answer (``answer``: as the upstream or its translation gave it;
        ``tokens`` and ``cost``, in pico-USD, as billed) for the account to come back
        to. ``body`` is the request as the client sent it (before ``resolve`` expanded
        it). Runs in the request's ending, after its usage record."""

    def stream_format(self, params: RequestParams) -> StreamFormat:
        raise NotImplementedError

    # -- errors and headers -----------------------------------------------------------

    def error_body(self, error: ApiError) -> dict[str, Any]:
        return error.payload()

    def error_response(self, error: ApiError, request_id: str | None = None) -> HttpResponse:
        return error.response(request_id, payload=self.error_body(error))

    def headers(self, request_id: str) -> dict[str, str]:
        """Headers of every response beyond ``x-request-id``."""
        return {}
