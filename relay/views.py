"""The ``/v1/*`` endpoints: plain async Django views, no DRF on the hot path."""

import orjson
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from core.threads import db

from . import errors
from .adapters import FORWARDED_HEADERS
from .errors import ApiError
from .lifecycle import method_not_allowed, request_id_for, serve
from .services import CHAT, EMBEDDINGS, MESSAGES, Endpoint, authenticate_async


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def bearer_key(request: HttpRequest) -> str | None:
    return bearer_token(request.headers.get("authorization"))


def key_for(endpoint: Endpoint, authorization: str | None, x_api_key: str | None) -> str | None:
    """The caller's key: a Bearer token, or for the Anthropic Messages API also
    ``x-api-key`` (which wins)."""
    if endpoint is MESSAGES and x_api_key:
        return x_api_key
    return bearer_token(authorization)


def client_ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


async def _serve(request: HttpRequest, endpoint: Endpoint) -> HttpResponse | StreamingHttpResponse:
    try:
        raw_body: bytes | None = request.body
    except RequestDataTooBig:
        raw_body = None
    return await serve(
        endpoint,
        method=request.method or "",
        raw_key=key_for(
            endpoint, request.headers.get("authorization"), request.headers.get("x-api-key")
        ),
        raw_body=raw_body,
        client_ip=client_ip(request),
        supplied_request_id=request.headers.get("x-request-id"),
        forwarded={
            name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers
        },
    )


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    return await _serve(request, CHAT)


@csrf_exempt
async def embeddings(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    return await _serve(request, EMBEDDINGS)


@csrf_exempt
async def messages(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """The Anthropic Messages API; the key comes in ``x-api-key`` or as a Bearer token."""
    return await _serve(request, MESSAGES)


@csrf_exempt
async def models(request: HttpRequest) -> HttpResponse:
    """The models this key may use, with its account's current prices."""
    from billing.selectors import prices_current

    request_id = request_id_for(request.headers.get("x-request-id"))
    if request.method != "GET":
        return method_not_allowed(request_id, "GET")
    try:
        key = await authenticate_async(bearer_key(request) or request.headers.get("x-api-key"))
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
            "pricing": price.snapshot(),
        }
        for model, price in sorted(prices.items())
        if not key.allowed_models or model in key.allowed_models
    ]
    response = HttpResponse(
        orjson.dumps({"object": "list", "data": data}), content_type="application/json"
    )
    response["x-request-id"] = request_id
    return response
