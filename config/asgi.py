"""ASGI entry point.

``/v1/*`` goes to the relay's own lean handler (see ``relay.asgi``). Static files
are answered from WhiteNoise's index (compressed, far-future cached, from
``collectstatic``'s output) before Django sees the request (``StaticFiles``). It is
kept out of Django's middleware on purpose: as synchronous middleware it would put
every ``/v1/*`` request through a thread.
"""

import asyncio
import gc
import os
import re

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_application = get_asgi_application()

from relay.asgi import RelayASGIHandler  # noqa: E402 - needs the apps loaded above

relay_application = RelayASGIHandler()


class StaticFiles:
    """Static files from WhiteNoise's index (hashed names cached for good, compressed
    variants, ranges and conditional requests), answered from the event loop, file
    reads on a thread.

    Not through asgiref's WSGI bridge: it sends each response through
    ``async_to_sync``, whose executor then stays in the context of what the event
    loop does next on the same keep-alive connection, and the connection's next
    request (a page, another file) failed with "CurrentThreadExecutor already quit"."""

    CHUNK = 64 * 1024

    def __init__(self) -> None:
        from whitenoise import WhiteNoise

        # collectstatic names each file after a hash of its content, so a named file
        # never changes and browsers may keep it for good (what WhiteNoise's
        # middleware infers from the manifest; standalone, it must be told).
        hashed = re.compile(r"\.[0-9a-f]{12}\.\w+(\.gz|\.br)?$")
        self.index = WhiteNoise(
            None,
            root=settings.STATIC_ROOT,
            prefix=settings.STATIC_URL,
            immutable_file_test=lambda path, url: bool(hashed.search(url)),
        )

    async def __call__(self, scope, receive, send) -> None:
        found = self.index.files.get(scope["path"])
        if found is None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"Not found"})
            return
        request_headers = {
            "HTTP_" + name.decode("latin-1").upper().replace("-", "_"): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        response = found.get_response(scope["method"], request_headers)
        await send(
            {
                "type": "http.response.start",
                "status": int(response.status),
                "headers": [
                    (name.lower().encode("latin-1"), str(value).encode("latin-1"))
                    for name, value in response.headers
                ],
            }
        )
        if response.file is None:
            await send({"type": "http.response.body", "body": b""})
            return
        loop = asyncio.get_running_loop()
        try:
            while chunk := await loop.run_in_executor(None, response.file.read, self.CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            response.file.close()


_static = StaticFiles()
_STATIC_PREFIX = settings.STATIC_URL

if settings.CELERY_TASK_ALWAYS_EAGER:
    from billing.embedded import start_sweeper
    from relay.tasks import responses_expire

    start_sweeper(also=[responses_expire])


async def _lifespan(receive, send) -> None:
    from billing.tasks import settlement_flush
    from core import adb, threads
    from relay.lifecycle import endings_done
    from relay.providers.client import close_sessions

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # Everything loaded so far (Django, the apps, their modules) lives as long
            # as the process: moved out of the collector's sight, a full collection
            # no longer walks it (one took over 100 ms every couple of thousand
            # relayed requests).
            gc.collect()
            gc.freeze()
            # A young-generation collection every 700 allocations ran several times
            # per relayed request; every 20,000 it is a few times per hundred.
            gc.set_threshold(20_000, 20, 20)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # Usage records still being written (a client that left, a database
            # that is restarting) are written before the connections close, and
            # their settlement is asked for before the process exits.
            await endings_done()
            await asyncio.to_thread(threads.drain)
            await asyncio.to_thread(settlement_flush)
            await adb.close()
            await close_sessions()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] == "http":
        path = scope["path"]
        if path.startswith("/v1/"):
            await relay_application(scope, receive, send)
            return
        if path.startswith(_STATIC_PREFIX):
            await _static(scope, receive, send)
            return
    await django_application(scope, receive, send)
