"""The ASGI handler for ``/v1/*``.

Django's handler does per-request work the relay does not need, and that work is
costly on the hot path: every middleware runs, the ``request_started`` and
``request_finished`` signals call synchronous receivers through the single
thread-sensitive executor (two serialised thread hops per request), and each
request gets a thread-sensitive context. The relay's views are async, use no
session, cookie or CSRF, and do their database work on their own threads, which
manage their connections. So this handler keeps Django's request parsing, URL
resolution, error handling and disconnect handling, and drops the rest.

The POSTs to the relayed endpoints (one per dialect) go further: they are answered straight
from the ASGI scope (``relay.lifecycle.serve``) without a Django request, URL
resolution or handler chain, and the response is written to the server directly.
Everything else under ``/v1/`` (``/v1/models``, a wrong method, an unknown path)
takes the Django route above.
"""

import asyncio
import io
import logging
from collections.abc import Coroutine
from contextlib import aclosing
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import set_script_prefix

from core.errors import JsonErrorsMiddleware
from core.logs import request_id

from . import errors
from .dialects import BY_PATH, Dialect
from .dialects.base import Body
from .lifecycle import CLIENT_GONE, serve
from .lifecycle.respond import StreamBroken
from .lifecycle.serve import body_limit
from .providers import FORWARDED_HEADERS

logger = logging.getLogger("tollgate.relay")


def _headers(scope) -> dict[bytes, bytes]:
    """The request's headers by (lower-case) name; a repeated header's values are
    joined with commas, as Django does (two Authorization headers make one
    malformed value, never a choice of one of them)."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        name = name.lower()
        headers[name] = headers[name] + b"," + value if name in headers else value
    return headers


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return value.decode("latin-1") if value is not None else None


_FORWARDED = [(name, name.encode()) for name in FORWARDED_HEADERS]


def _forwarded(headers: dict[bytes, bytes]) -> dict[str, str] | None:
    """The headers the caller sent for the provider, if any."""
    found = {name: headers[raw].decode("latin-1") for name, raw in _FORWARDED if raw in headers}
    return found or None


def _declared_length(headers: dict[bytes, bytes]) -> int:
    try:
        return int(headers.get(b"content-length") or 0)
    except ValueError:
        return 0


async def _read(receive, limit: int | None, declared: int) -> Body:
    """The request's body, read once into memory. Only up to one byte past ``limit``
    is kept, enough for the request to refuse it as too large; the rest is read and
    dropped. A body in one message is taken as it came; a larger one whose length
    was declared goes into one buffer of that size as it arrives, so an upload is
    never held twice."""
    keep = None if limit is None else limit + 1
    chunks: list[bytes] = []
    buffer: memoryview | None = None
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestAborted()
        body = message.get("body") or b""
        more = message.get("more_body", False)
        if not more and not chunks and buffer is None and (keep is None or len(body) < keep):
            return body
        if keep is not None:
            body = body[: max(0, keep - size)]
        if body:
            if buffer is None and 0 < declared <= (keep or declared) and not chunks:
                buffer = memoryview(bytearray(declared))
            if buffer is not None and size + len(body) <= len(buffer):
                buffer[size : size + len(body)] = body
            else:
                if buffer is not None:  # more than was declared
                    chunks.append(bytes(buffer[:size]))
                    buffer = None
                chunks.append(body)
            size += len(body)
        if not more:
            if buffer is not None:
                whole = buffer.obj
                assert isinstance(whole, bytearray)
                return whole[:size] if size < len(whole) else whole
            return b"".join(chunks)


async def _send(response: HttpResponse | StreamingHttpResponse, send) -> None:
    """Write a response to the ASGI server (the relay's responses carry no cookies)."""
    headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()
    ]
    if isinstance(response, StreamingHttpResponse):
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        async with aclosing(aiter(response)) as parts:  # type: ignore[type-var]
            async for part in parts:
                if part:
                    await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body"})
        return
    body = response.content
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RelayASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list = []
        self._template_response_middleware: list = []
        self._exception_middleware: list = []
        # Django's own answer to an exception (its HTML error or debug page) is
        # rewritten as JSON in the OpenAI shape.
        self._middleware_chain = JsonErrorsMiddleware(
            convert_exception_to_response(self._get_response_async)  # type: ignore[attr-defined]
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"The relay serves HTTP only, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        dialect = BY_PATH.get(scope["path"]) if scope["method"] == "POST" else None
        if dialect is not None and not scope.get("root_path"):
            headers = _headers(scope)
            try:
                body = await _read(receive, body_limit(dialect), _declared_length(headers))
            except RequestAborted:
                return
            await self._watching_disconnect(
                receive, self._relay(dialect, scope, headers, body, send)
            )
            return
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(self.get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            assert error_response is not None
            await self.send_response(error_response, send)
            return

        async def process_request():
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client went away while the response was being sent
            return response

        await self._watching_disconnect(receive, process_request())
        body_file.close()

    async def _relay(self, dialect: Dialect, scope, headers, body: Body, send) -> None:
        limit = body_limit(dialect)
        too_large = len(body) > limit or _declared_length(headers) > limit
        client = scope.get("client")
        response = await serve(
            dialect,
            method="POST",
            raw_key=dialect.key(_header(headers, b"authorization"), _header(headers, b"x-api-key")),
            raw_body=None if too_large else body,
            client_ip=client[0] if client else None,
            supplied_request_id=_header(headers, b"x-request-id"),
            forwarded=_forwarded(headers),
            record_after_response=True,
            content_type=_header(headers, b"content-type"),
        )
        try:
            await _send(response, send)
        except asyncio.CancelledError:
            pass  # the client went away while the response was being sent
        except StreamBroken as broken:
            # Audio has no error event: returning with the response unfinished makes
            # the server drop the connection, so the client sees it broken off.
            logger.warning("%s", broken)
        except Exception:
            # The request itself has ended (its owner saw to that); what is left is
            # to answer in JSON if nothing was sent yet. If the response had begun,
            # the server refuses a second start and drops the connection.
            logger.exception("request %s: its response could not be sent", request_id.get())
            error = errors.internal_error(request_id.get() or "")
            try:
                await _send(error.response(request_id.get()), send)
            except Exception:  # noqa: S110 - logged above; nothing more can be sent
                pass

    async def _watching_disconnect(self, receive, process: Coroutine[Any, Any, Any]) -> None:
        """Run ``process`` while watching for the client leaving (as Django does), but
        in this task rather than a task of its own: one task fewer and no wait on two
        tasks per request. A disconnect cancels this task, with ``CLIENT_GONE`` as
        the cancellation's message (any other cancellation is the server's); the
        request ends from its own cleanup, and that cancellation ends here."""
        task = asyncio.current_task()
        assert task is not None
        aborted = False

        def on_disconnect(listener: asyncio.Task) -> None:
            nonlocal aborted
            if not listener.cancelled() and isinstance(listener.exception(), RequestAborted):
                aborted = True
                task.cancel(CLIENT_GONE)

        listener = asyncio.create_task(self.listen_for_disconnect(receive))
        listener.add_done_callback(on_disconnect)
        try:
            await process
        except asyncio.CancelledError:
            if not aborted:
                raise  # the server is cancelling the request, not the client
            task.uncancel()
        finally:
            listener.cancel()

    async def read_body(self, receive):
        """The body in memory rather than in a spooled temporary file (a file object
        per request costs more than the bodies Django's routes take are worth), up
        to ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (see ``_read``)."""
        return io.BytesIO(await _read(receive, settings.DATA_UPLOAD_MAX_MEMORY_SIZE, 0))

    @staticmethod
    def get_script_prefix(scope) -> str:
        return scope.get("root_path", "") or "/"
