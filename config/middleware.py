"""Middleware for the console, the management API and the admin (``/v1/*`` has its
own lean handler and does the same work itself)."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from .logs import request_id, request_id_from


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = request_id_from(request.headers.get("x-request-id"))
        token = request_id.set(rid)
        try:
            response = self.get_response(request)
        finally:
            request_id.reset(token)
        response["x-request-id"] = rid
        return response


class ContentSecurityPolicyMiddleware:
    """Pages load scripts, styles and images from this origin only; no page can be
    framed. Inline ``style`` attributes are allowed (the templates use a few); inline
    scripts are not (the pages have none)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if settings.CONTENT_SECURITY_POLICY:
            response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response


class NullCharactersMiddleware:
    """A query string with a NUL character is refused with a 400 before any view
    runs: PostgreSQL text cannot hold one, so a filter such as ``?model=%00`` would
    otherwise fail inside the database (a 500). The management API answers in its
    usual shape, naming the parameter, as DRF does for a body field."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                message = "Null characters are not allowed."
                if request.path.startswith("/api/"):
                    return JsonResponse({name.replace("\x00", ""): [message]}, status=400)
                return HttpResponseBadRequest(message, content_type="text/plain")
        return self.get_response(request)
