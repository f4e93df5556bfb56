"""Staff pages of the admin site beyond Django's own: the overview (requests, money
and margin per day, model, channel and account; channel health) and the mail
Tollgate has sent."""

from email import message_from_string
from pathlib import Path

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from billing.selectors import margin_days, margin_report, margin_window_start
from relay.models import Channel
from relay.selectors import channel_models_without_cost
from usage.reports import overview

# The overview lists the accounts with the most revenue; the API has them all.
OVERVIEW_ACCOUNTS = 25


@staff_member_required
def admin_overview(request: HttpRequest) -> HttpResponse:
    from django.contrib import admin

    # Requests and errors from the roll-up; money from the ledger, by posting day.
    money = {row["day"]: row for row in margin_days(days=30)}
    days = []
    for usage in overview(days=30):
        posted = money.get(usage["day"], {"revenue": 0, "cost": 0})
        revenue, cost = posted["revenue"], posted["cost"]
        days.append({**usage, "revenue": revenue, "upstream_cost": cost, "margin": revenue - cost})
    chart = {
        "type": "bar",
        "prefix": "$",
        "labels": [d["day"].strftime("%b %d") for d in days],
        "series": [
            {
                "label": "Revenue",
                "data": [d["revenue"] / 1_000_000 for d in days],
                "color": "#3b5bdb",
            },
            {
                "label": "Upstream cost",
                "data": [d["upstream_cost"] / 1_000_000 for d in days],
                "color": "#f59f00",
            },
            {
                "label": "Margin",
                "data": [d["margin"] / 1_000_000 for d in days],
                "type": "line",
                "color": "#12b886",
            },
        ],
    }
    totals = {
        key: sum(d[key] for d in days)
        for key in ("requests", "errors", "revenue", "upstream_cost", "margin")
    }
    start = margin_window_start(days=30)
    # Each channel with the models it serves at no cost price: margin overstated.
    channels = [
        (channel, channel_models_without_cost(channel))
        for channel in Channel.objects.order_by("-priority", "name")
    ]
    missing = {channel.pk: models for channel, models in channels}
    by_channel = margin_report(by="channel", start=start)
    for row in by_channel:
        row["cost_missing"] = missing.get(row["channel"], [])
    by_account = margin_report(by="account", start=start)
    return render(
        request,
        "admin/overview.html",
        {
            **admin.site.each_context(request),
            "title": "Overview",
            "days": list(reversed(days)),
            "totals": totals,
            "chart": chart,
            "channels": channels,
            "unpriced": [(channel, models) for channel, models in channels if models],
            "by_model": margin_report(by="model", start=start),
            "by_channel": by_channel,
            "by_account": by_account[:OVERVIEW_ACCOUNTS],
            "accounts_shown": min(len(by_account), OVERVIEW_ACCOUNTS),
            "accounts_total": len(by_account),
        },
    )


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
