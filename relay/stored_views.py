"""The routes of stored responses: ``GET`` and ``DELETE /v1/responses/{id}``,
``GET /v1/responses/{id}/input_items`` and ``POST /v1/responses/{id}/cancel``.

Plain async views, authenticated like the rest of ``/v1/*`` and answering in
OpenAI's error shape whatever goes wrong; they bill nothing. A response exists only
for the account that made it: another account's id is a 404, as is an id never
kept. A response its channel's upstream keeps is asked of that upstream (the only
ids ever forwarded are those Tollgate saw it make for this account); one Tollgate
keeps is answered from here.
"""

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from core.threads import db

from . import errors, limits, metrics
from .dialects.base import bearer_token
from .dialects.responses import conversation, not_found
from .errors import ApiError, invalid_request
from .lifecycle import method_not_allowed, request_id_for
from .lifecycle.admission import rate_limited
from .lifecycle.auth import authenticate_async
from .models import StoredResponse
from .providers import UpstreamFailure
from .providers.openai.responses import upstream_stored
from .selectors import channels_enabled
from .stored_responses import (
    stored_response_chain,
    stored_response_delete,
    stored_response_find,
)

access_log = logging.getLogger("tollgate.access")

Handler = Callable[[HttpRequest, StoredResponse, str], Awaitable[dict[str, Any]]]
MAX_PAGE = 100
DEFAULT_PAGE = 20


def _stored_view(
    endpoints: dict[str, str], handler: Handler
) -> Callable[..., Coroutine[Any, Any, HttpResponse]]:
    """A view of one stored response: the caller's key (and its rate limits: a read
    is a request like any other), the account's response of that id (or a 404), then
    ``handler``'s answer as JSON. Every call is counted in the metrics and leaves an
    access line, refused ones included, under its endpoint's name by method
    (``endpoints``)."""
    allowed = ", ".join(endpoints)

    @csrf_exempt
    async def view(request: HttpRequest, response_id: str) -> HttpResponse:
        started = time.perf_counter()
        request_id = request_id_for(request.headers.get("x-request-id"))
        endpoint = endpoints.get(request.method or "")
        if endpoint is None:
            return method_not_allowed(request_id, allowed)
        key = None
        admission = None
        failure: ApiError | None = None
        try:
            raw_key = bearer_token(request.headers.get("authorization"))
            key = await authenticate_async(raw_key or request.headers.get("x-api-key"))
            if limits.applies(key):
                admission = await db(limits.admit)(key=key, request_id=request_id, tokens=0)
            stored = await db(stored_response_find)(
                response_id=response_id, account_id=key.account_id
            )
            if stored is None:
                raise not_found(response_id)
            payload = await handler(request, stored, request_id)
        except limits.RateLimited as exc:
            failure = rate_limited(exc)
        except ApiError as exc:
            failure = exc
        except (OperationalError, InterfaceError):
            failure = errors.service_unavailable(request_id)
        finally:
            if admission is not None:
                await db(limits.release)(admission, tokens_used=0)
        if failure is not None:
            response = failure.response(request_id)
        else:
            response = HttpResponse(orjson.dumps(payload), content_type="application/json")
            response["x-request-id"] = request_id
        for name, value in (admission.headers if admission is not None else {}).items():
            response[name] = value
        metrics.route_answered(endpoint=endpoint, http_status=response.status_code, error=failure)
        access_log.info(
            "%s %s",
            endpoint,
            response.status_code,
            extra={
                "account_id": key.account_id if key is not None else None,
                "api_key_id": key.id if key is not None else None,
                "http_status": response.status_code,
                "error_code": (failure.code or failure.type) if failure is not None else None,
                "latency_ms": int((time.perf_counter() - started) * 1000),
            },
        )
        return response

    view.__name__ = view.__qualname__ = handler.__name__
    return view


async def _upstream(
    stored: StoredResponse, request_id: str, method: str, suffix: str = "", query: str = ""
) -> dict[str, Any]:
    """The route asked of the upstream keeping the response."""
    channel = next((c for c in await db(channels_enabled)() if c.id == stored.channel_id), None)
    if channel is None:
        raise errors.upstream_error(
            503,
            "The channel keeping this response is not serving right now.",
            request_id,
            "no_channel_available",
        )
    try:
        return await upstream_stored(channel, method, stored.response_id, suffix, query)
    except UpstreamFailure as exc:
        if exc.upstream_status == 404:
            raise not_found(stored.response_id) from None
        raise exc.client_error or errors.upstream_error(
            exc.status, exc.message, request_id, exc.code
        ) from None


def _no_stream(request: HttpRequest) -> None:
    if request.GET.get("stream", "false").lower() not in ("false", "0"):
        raise invalid_request(
            "Streaming a stored response again is not supported; retrieve it whole.",
            param="stream",
        )


async def response(request: HttpRequest, stored: StoredResponse, request_id: str) -> dict:
    if request.method == "DELETE":
        if stored.upstream:
            answer = await _upstream(stored, request_id, "DELETE")
        else:
            answer = {"id": stored.response_id, "object": "response", "deleted": True}
        await db(stored_response_delete)(
            response_id=stored.response_id, account_id=stored.account_id
        )
        return answer
    _no_stream(request)
    if stored.upstream:
        answer = await _upstream(
            stored, request_id, "GET", query=request.META.get("QUERY_STRING", "")
        )
        billed = stored.response.get("usage")
        if isinstance(billed, dict) and isinstance(answer.get("usage"), dict):
            # The usage as billed: the upstream's, with its cost.
            answer["usage"] = {**answer["usage"], **billed}
        return answer
    return stored.response


def _page_size(request: HttpRequest) -> int:
    raw = request.GET.get("limit", str(DEFAULT_PAGE))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise invalid_request(f"`limit` must be an integer from 1 to {MAX_PAGE}.", param="limit")
    return limit


def _page(request: HttpRequest, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A page of ``items`` as the Responses API lists them (newest first unless
    ``order=asc``; ``after`` and ``before`` are item ids)."""
    limit = _page_size(request)
    order = request.GET.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid_request("`order` must be `asc` or `desc`.", param="order")
    ordered = items if order == "asc" else items[::-1]
    ids = [item.get("id") for item in ordered]
    start, end = 0, len(ordered)
    for name in ("after", "before"):
        cursor = request.GET.get(name)
        if cursor is None:
            continue
        if cursor not in ids:
            raise invalid_request(f"`{name}` must be the id of one of the items.", param=name)
        if name == "after":
            start = ids.index(cursor) + 1
        else:
            end = ids.index(cursor)
    data = ordered[start:end][:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0].get("id") if data else None,
        "last_id": data[-1].get("id") if data else None,
        "has_more": start + len(data) < end,
    }


async def input_items(request: HttpRequest, stored: StoredResponse, request_id: str) -> dict:
    if stored.upstream:
        query = request.META.get("QUERY_STRING", "")
        return await _upstream(stored, request_id, "GET", "/input_items", query)
    # What the model was given: the conversation it continued, then its own input.
    chain = await db(stored_response_chain)(
        response_id=stored.response_id, account_id=stored.account_id
    )
    return _page(request, [*conversation(chain[:-1]), *stored.items])


async def cancel(request: HttpRequest, stored: StoredResponse, request_id: str) -> dict:
    if stored.upstream:
        return await _upstream(stored, request_id, "POST", "/cancel")
    raise invalid_request(
        "Only responses created in the background can be cancelled; this one was not.",
        code="response_not_cancellable",
    )


stored_response = _stored_view(
    {"GET": "responses.retrieve", "DELETE": "responses.delete"}, response
)
stored_response_input_items = _stored_view({"GET": "responses.input_items"}, input_items)
stored_response_cancel = _stored_view({"POST": "responses.cancel"}, cancel)
