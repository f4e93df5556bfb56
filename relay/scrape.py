"""``/metrics``: the Prometheus exposition, for the operator's scraper only.

The figures name models, channels and money flows, so the endpoint answers a caller on
a loopback or private address, or one presenting ``TOLLGATE_METRICS_TOKEN``, and
nobody else. A request that came through a proxy (it carries a forwarding header) is
not trusted for its address: a reverse proxy on the same host would otherwise make
every Internet client look local.
"""

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from .metrics import exposition

_FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED")


def _has_token(request: HttpRequest) -> bool:
    token = settings.TOLLGATE_METRICS_TOKEN
    if not token:
        return False
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def _is_local(request: HttpRequest) -> bool:
    if any(request.META.get(name) for name in _FORWARDING_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR") or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_private


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    if not (_has_token(request) or _is_local(request)):
        return HttpResponse(
            "Forbidden: /metrics answers private addresses or the metrics token.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    body, content_type = exposition()
    return HttpResponse(body, content_type=content_type)
