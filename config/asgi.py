"""ASGI entry point.

``/v1/*`` goes to the relay's own lean handler (see ``relay.asgi``). Static files
are answered by WhiteNoise (compressed, far-future cached, from
``collectstatic``'s output) before Django sees the request; WhiteNoise is a WSGI
application, so only static requests take the thread hop of ``WsgiToAsgi``. It is
kept out of Django's middleware on purpose: as synchronous middleware it would put
every ``/v1/*`` request through a thread.
"""

import asyncio
import gc
import os
import re

from asgiref.wsgi import WsgiToAsgi
from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_application = get_asgi_application()

from relay.asgi import RelayASGIHandler  # noqa: E402 - needs the apps loaded above

relay_application = RelayASGIHandler()


def _not_found(environ, start_response):
    start_response("404 Not Found", [("content-type", "text/plain")])
    return [b"Not found"]


def _static_application():
    from whitenoise import WhiteNoise

    # collectstatic names each file after a hash of its content, so a named file never
    # changes and browsers may keep it for good (what WhiteNoise's middleware infers
    # from the manifest; standalone, it must be told).
    hashed = re.compile(r"\.[0-9a-f]{12}\.\w+(\.gz|\.br)?$")
    static = WhiteNoise(
        _not_found,
        root=settings.STATIC_ROOT,
        prefix=settings.STATIC_URL,
        immutable_file_test=lambda path, url: bool(hashed.search(url)),
    )
    return WsgiToAsgi(static)


_static = _static_application()
_STATIC_PREFIX = settings.STATIC_URL

if settings.CELERY_TASK_ALWAYS_EAGER:
    from billing.embedded import start_sweeper

    start_sweeper()


async def _lifespan(receive, send) -> None:
    from billing.tasks import settlement_flush
    from config import adb, threads
    from relay.client import close_sessions
    from relay.lifecycle import endings_done

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
