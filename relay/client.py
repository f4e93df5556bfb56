"""One pooled upstream HTTP client per event loop (in practice: per process)."""

import asyncio

import httpx
from django.conf import settings

_clients: dict[int, tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = {}


def upstream_client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    entry = _clients.get(id(loop))
    if entry is not None and entry[0] is loop:
        return entry[1]
    cfg = settings.TOLLGATE
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=cfg["UPSTREAM_CONNECT_TIMEOUT"],
            read=cfg["UPSTREAM_READ_TIMEOUT"],
            write=30.0,
            pool=cfg["UPSTREAM_CONNECT_TIMEOUT"],
        ),
        limits=httpx.Limits(
            max_connections=cfg["UPSTREAM_MAX_CONNECTIONS"],
            max_keepalive_connections=cfg["UPSTREAM_MAX_CONNECTIONS"],
            keepalive_expiry=30.0,
        ),
        follow_redirects=False,
        trust_env=False,
    )
    _clients[id(loop)] = (loop, client)
    return client
