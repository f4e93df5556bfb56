"""The ``/v1/*`` endpoints as Django views: plain async views, no DRF on the hot path.

The ASGI handler (``relay.asgi``) answers the relayed POSTs itself; these views are
the same endpoints for Django's own handlers (and every other method and path)."""

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from core.threads import db

from . import errors
from .dialects import Dialect
from .dialects.base import bearer_token
from .errors import ApiError
from .lifecycle import method_not_allowed, request_id_for, serve
from .lifecycle.auth import authenticate_async
from .lifecycle.serve import body_limit
from .providers import FORWARDED_HEADERS

View = Callable[[HttpRequest], Coroutine[Any, Any, HttpResponse | StreamingHttpResponse]]


def client_ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def _body(request: HttpRequest, limit: int) -> bytes | None:
    """The body, or None when it is larger than the endpoint takes (the endpoint's own
    limit, which may be above ``DATA_UPLOAD_MAX_MEMORY_SIZE`` for uploads)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return None
    body = request.read(limit + 1)
    return None if len(body) > limit else body


def relayed(dialect: Dialect) -> View:
    """The view of a dialect's endpoint."""

    @csrf_exempt
    async def view(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        return await serve(
            dialect,
            method=request.method or "",
            raw_key=dialect.key(
                request.headers.get("authorization"), request.headers.get("x-api-key")
            ),
            raw_body=_body(request, body_limit(dialect)),
            client_ip=client_ip(request),
            supplied_request_id=request.headers.get("x-request-id"),
            forwarded={
                name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers
            },
            content_type=request.headers.get("content-type"),
        )

    view.__name__ = view.__qualname__ = dialect.name.replace(".", "_")
    return view


@csrf_exempt
async def models(request: HttpRequest) -> HttpResponse:
    """The models this key may use, with its account's current prices."""
    from billing.selectors import prices_current

    request_id = request_id_for(request.headers.get("x-request-id"))
    if request.method != "GET":
        return method_not_allowed(request_id, "GET")
    try:
        raw_key = bearer_token(request.headers.get("authorization"))
        key = await authenticate_async(raw_key or request.headers.get("x-api-key"))
        prices = await db(prices_current)(group_id=key.price_group_id)
    except ApiError as exc:
        return exc.response(request_id)
    except (OperationalError, InterfaceError):
        return errors.service_unavailable(request_id).response(request_id)
    data = [
        {
            "id": model,
            "object": "model",
            "created": 0,
            "owned_by": "tollgate",
            "mode": price.mode,
            "pricing": price.describe(),
        }
        for model, price in sorted(prices.items())
        if not key.allowed_models or model in key.allowed_models
    ]
    response = HttpResponse(
        orjson.dumps({"object": "list", "data": data}), content_type="application/json"
    )
    response["x-request-id"] = request_id
    return response
