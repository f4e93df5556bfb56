"""Errors on the two machine surfaces are JSON, always.

``/v1/*`` answers in the OpenAI error shape (``{"error": {"message", "type", "param",
"code"}}``) and ``/api/*`` in Django REST framework's (``{"detail": ...}``), whatever
went wrong: an unknown path, a wrong method, the database refusing connections, an
exception in a view or a middleware, Django's own 400/403/404/500 pages (which are
HTML, and with DEBUG on are its debug pages). The pages people read (the console,
the admin, the API's documentation pages) keep their HTML.

Three layers, each for what the one before it cannot see:

- views that know their surface answer in its shape themselves (the relay, DRF);
- DRF's exception handler (``api_exception_handler``) turns any exception raised in
  an API view into JSON: a database outage is a 503 with ``retry-after``;
- ``JsonErrorsMiddleware``, outermost, rewrites any error response on either surface
  that is not JSON, keeping its status and headers; the URL catch-alls
  (``relay_not_found``, ``api_not_found``) answer unknown paths.

Errors the HTTP server answers itself, before Tollgate sees the request (a malformed
request line or header, headers too large, a broken chunked body), cannot be shaped
here: the README lists them.
"""

import logging
from http import HTTPStatus
from typing import Any

import orjson
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import sync_and_async_middleware
from rest_framework.response import Response
from rest_framework.views import exception_handler

from .logs import request_id

logger = logging.getLogger("tollgate.errors")

_RELAY = "/v1/"
_API = "/api/"
# Pages under /api/ that are HTML by nature.
_API_PAGES = ("/api/docs/", "/api/redoc/")

_RELAY_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def relay_error(
    status: int, message: str, *, code: str | None = None, type: str | None = None
) -> HttpResponse:
    """An error on ``/v1/*``, in the OpenAI shape."""
    rid = request_id.get()
    if status >= 500 and rid:
        message = f"{message} (request id: {rid})"
    payload = {
        "error": {
            "message": message,
            "type": type or _RELAY_TYPES.get(status, "api_error"),
            "param": None,
            "code": code,
        }
    }
    return HttpResponse(orjson.dumps(payload), status=status, content_type="application/json")


def api_error(status: int, detail: str) -> HttpResponse:
    """An error on ``/api/*``, in Django REST framework's shape."""
    return HttpResponse(
        orjson.dumps({"detail": detail}), status=status, content_type="application/json"
    )


def _surface(path: str) -> str | None:
    if path.startswith(_RELAY):
        return "relay"
    if path.startswith(_API) and not path.startswith(_API_PAGES):
        return "api"
    return None


_MESSAGES = {
    400: "The request could not be understood.",
    403: "Forbidden.",
    404: "Not found.",
    405: "Method not allowed.",
    500: "The server failed to complete the request.",
    503: "The service is briefly unavailable; retry shortly.",
}
_CODES = {400: "bad_request", 403: "forbidden", 404: "unknown_url", 405: "method_not_allowed"}


def _as_json(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    surface = _surface(request.path)
    if surface is None or response.status_code < 400:
        return response
    if response.get("content-type", "").startswith("application/json"):
        return response
    status = response.status_code
    message = _MESSAGES.get(status, _phrase(status) + ".")
    if surface == "relay":
        if status == 404:
            message = f"Invalid URL ({request.method} {request.path})."
        replacement = relay_error(status, message, code=_CODES.get(status, "internal_error"))
    else:
        replacement = api_error(status, message)
    for name in ("allow", "retry-after", "x-request-id"):
        if name in response:
            replacement[name] = response[name]
    return replacement


@sync_and_async_middleware
def JsonErrorsMiddleware(get_response):
    """Outermost: an error response on ``/v1/*`` or ``/api/*`` that is not JSON (from
    Django's handlers, a middleware, an HTML debug page) is answered as JSON."""
    from asgiref.sync import iscoroutinefunction

    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            return _as_json(request, await get_response(request))

    else:

        def middleware(request: HttpRequest) -> HttpResponse:  # type: ignore[misc]
            return _as_json(request, get_response(request))

    return middleware


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, and JSON for what it leaves to Django: a database that is
    unavailable (503, retry shortly) and any other exception (500, logged)."""
    response = exception_handler(exc, context)
    if response is not None:
        return response
    if isinstance(exc, OperationalError | InterfaceError):
        logger.warning("API request failed: database unavailable (%s)", type(exc).__name__)
        return Response({"detail": _MESSAGES[503]}, status=503, headers={"retry-after": "1"})
    if isinstance(exc, DatabaseError):
        logger.exception("API request failed in the database")
    else:
        logger.exception("API request failed")
    return Response({"detail": _MESSAGES[500]}, status=500)


def relay_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return relay_error(404, f"Invalid URL ({request.method} {request.path}).", code="unknown_url")


def api_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return api_error(404, _MESSAGES[404])


def _handler(status: int):
    """Django's error views (``handler400`` ...), JSON on the machine surfaces."""
    from django.views import defaults

    default: Any = {
        400: defaults.bad_request,
        403: defaults.permission_denied,
        404: defaults.page_not_found,
        500: defaults.server_error,
    }[status]

    def view(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
        if _surface(request.path) is not None:
            return _as_json(request, HttpResponse(status=status, content_type="text/plain"))
        if status == 500:
            return default(request)
        return default(request, exception)

    return view


handler400 = _handler(400)
handler403 = _handler(403)
handler404 = _handler(404)
handler500 = _handler(500)
