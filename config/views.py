"""``/metrics``: the Prometheus exposition, for the operator's scraper only.

The figures name models, channels and money flows, so the endpoint answers a caller on
a loopback or private address, or one presenting ``TOLLGATE_METRICS_TOKEN``, and
nobody else. A request that came through a proxy (it carries a forwarding header) is
not trusted for its address: a reverse proxy on the same host would otherwise make
every Internet client look local.
"""

import hmac
import ipaddress
from email import message_from_string
from pathlib import Path

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from relay.metrics import exposition

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


def _sent_mail(directory: Path, limit: int = 50) -> list[dict[str, str]]:
    """The newest messages Django's file backend wrote (one or more per file, each
    followed by a line of 79 dashes)."""
    if not directory.is_dir():
        return []
    messages: list[dict[str, str]] = []
    # By when each file was last written: names carry the second only, then an
    # object id, so two files of one second do not sort by time.
    files = sorted(directory.glob("*.log"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for path in files:
        for raw in reversed(path.read_text(errors="replace").split("\n" + "-" * 79 + "\n")):
            if not raw.strip():
                continue
            message = message_from_string(raw)
            body = message.get_payload(decode=True)
            messages.append(
                {
                    "date": message.get("Date", ""),
                    "to": message.get("To", ""),
                    "subject": message.get("Subject", ""),
                    "body": body.decode(errors="replace")
                    if isinstance(body, bytes)
                    else str(message.get_payload()),
                }
            )
            if len(messages) >= limit:
                return messages
    return messages


@staff_member_required
def admin_mail(request: HttpRequest) -> HttpResponse:
    """What Tollgate has mailed: the messages themselves where mail goes to files (the
    embedded run), otherwise where it goes."""
    from django.contrib import admin

    to_files = settings.EMAIL_BACKEND.endswith("filebased.EmailBackend")
    directory = Path(getattr(settings, "EMAIL_FILE_PATH", "") or ".")
    return render(
        request,
        "admin/mail.html",
        {
            **admin.site.each_context(request),
            "title": "Mail sent",
            "to_files": to_files,
            "directory": directory,
            "backend": settings.EMAIL_BACKEND,
            "host": getattr(settings, "EMAIL_HOST", ""),
            "sender": settings.DEFAULT_FROM_EMAIL,
            "messages": _sent_mail(directory) if to_files else [],
        },
    )
