"""Middleware for the console, the management API and the admin (``/v1/*`` has its
own lean handler and does the same work itself).

Each runs inline in either of Django's modes. Under ASGI a single sync-only
middleware makes Django run the rest of the chain on a thread and the view back on
the event loop through ``async_to_sync``; that bridge's executor then stays in the
context of whatever the event loop does next on the same keep-alive connection, and
a later request (a page, a static file) failed with "CurrentThreadExecutor already
quit". Their work is quick and does no I/O, so it needs no thread either way.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from .logs import request_id, request_id_from


class _Inline:
    """A middleware that runs its quick ``before``/``after`` steps inline, whichever
    way (sync or async) the rest of the chain runs."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def before(self, request: HttpRequest) -> HttpResponse | None:
        """An answer that stops the request here, or None to go on."""
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return response

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        early = self.before(request)
        if early is not None:
            return self.after(request, early)
        return self.after(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        early = self.before(request)
        if early is not None:
            return self.after(request, early)
        return self.after(request, await self.get_response(request))


class RequestIdMiddleware(_Inline):
    """The request id of every log line written while the request is served, and the
    ``x-request-id`` header of its response."""

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        request.request_id = request_id_from(request.headers.get("x-request-id"))  # type: ignore[attr-defined]
        if self.is_async:
            return self._with_id(request)
        token = request_id.set(request.request_id)  # type: ignore[attr-defined]
        try:
            response = self.get_response(request)
        finally:
            request_id.reset(token)
        return self.after(request, response)

    async def _with_id(self, request: HttpRequest) -> HttpResponse:
        token = request_id.set(request.request_id)  # type: ignore[attr-defined]
        try:
            response = await self.get_response(request)
        finally:
            request_id.reset(token)
        return self.after(request, response)

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        response["x-request-id"] = request.request_id  # type: ignore[attr-defined]
        return response


class ContentSecurityPolicyMiddleware(_Inline):
    """Pages load scripts, styles and images from this origin only; no page can be
    framed. Inline ``style`` attributes are allowed (the templates use a few); inline
    scripts are not (the pages have none)."""

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if settings.CONTENT_SECURITY_POLICY:
            response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response


class NullCharactersMiddleware(_Inline):
    """A query string with a NUL character is refused with a 400 before any view
    runs: PostgreSQL text cannot hold one, so a filter such as ``?model=%00`` would
    otherwise fail inside the database (a 500). The management API answers in its
    usual shape, naming the parameter, as DRF does for a body field."""

    def before(self, request: HttpRequest) -> HttpResponse | None:
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                message = "Null characters are not allowed."
                if request.path.startswith("/api/"):
                    return JsonResponse({name.replace("\x00", ""): [message]}, status=400)
                return HttpResponseBadRequest(message, content_type="text/plain")
        return None
