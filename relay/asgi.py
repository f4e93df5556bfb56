"""The ASGI handler for ``/v1/*``.

Django's handler does per-request work the relay does not need, and that work is
costly on the hot path: every middleware runs, the ``request_started`` and
``request_finished`` signals call synchronous receivers through the single
thread-sensitive executor (two serialised thread hops per request), and each
request gets a thread-sensitive context. The relay's views are async, use no
session, cookie or CSRF, and do their database work on their own threads, which
manage their connections. So this handler keeps Django's request parsing, URL
resolution, error handling and disconnect handling, and drops the rest.
"""

import asyncio
import io

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.urls import set_script_prefix


class RelayASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list = []
        self._template_response_middleware: list = []
        self._exception_middleware: list = []
        self._middleware_chain = convert_exception_to_response(
            self._get_response_async  # type: ignore[attr-defined]
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"The relay serves HTTP only, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
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

        # Watch for the client leaving while the view runs (as Django does): the view
        # is cancelled and bills what it must from its own cleanup.
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request()),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        body_file.close()

    async def read_body(self, receive):
        """The body in memory rather than in a spooled temporary file (a file object
        per request costs more than the relay's bodies are worth). Only up to one
        byte past ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is kept, enough for the request to
        refuse it as too large; the rest is read and dropped."""
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        keep = None if limit is None else limit + 1
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestAborted()
            body = message.get("body")
            if body and (keep is None or size < keep):
                if keep is not None:
                    body = body[: keep - size]
                chunks.append(body)
                size += len(body)
            if not message.get("more_body", False):
                return io.BytesIO(b"".join(chunks))

    @staticmethod
    def get_script_prefix(scope) -> str:
        return scope.get("root_path", "") or "/"
