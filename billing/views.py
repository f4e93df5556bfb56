"""The console's billing pages, and the admin's overview."""

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from accounts.console import member_required, signed_in
from accounts.models import Account
from accounts.services import account_low_balance_set
from relay.models import Channel
from relay.selectors import channel_models_without_cost
from usage.reports import overview

from .forms import LowBalanceForm, RedeemForm
from .models import Entry, Statement
from .pricing import micro_to_usd, usd_to_micro
from .selectors import margin_days, margin_report, margin_window_start, prices_current
from .services import RedemptionError, ledger_account_customer_id, redemption_redeem


@member_required
def billing(request: HttpRequest, account: Account) -> HttpResponse:
    redeem = RedeemForm(request.POST if "redeem" in request.POST else None, prefix="redeem")
    alert = LowBalanceForm(
        request.POST if "alert" in request.POST else None,
        prefix="alert",
        initial={
            "threshold": micro_to_usd(account.low_balance_threshold)
            if account.low_balance_threshold is not None
            else None
        },
    )
    if request.method == "POST":
        if "redeem" in request.POST and redeem.is_valid():
            try:
                txn = redemption_redeem(
                    account=account, code=redeem.cleaned_data["code"], user=signed_in(request)
                )
            except RedemptionError as exc:
                redeem.add_error("code", str(exc))
            else:
                amount = txn.entries.get(ledger_account__account=account).amount
                messages.success(
                    request, f"Redeemed: ${micro_to_usd(amount)} added to your balance."
                )
                return redirect("billing")
        elif "alert" in request.POST and alert.is_valid():
            value = alert.cleaned_data["threshold"]
            account_low_balance_set(
                account=account, threshold=usd_to_micro(value) if value is not None else None
            )
            messages.success(request, "Saved the low-balance alert.")
            return redirect("billing")
    entries = (
        Entry.objects.filter(ledger_account_id=ledger_account_customer_id(account.pk))
        .select_related("transaction")
        .order_by("-transaction__created_at", "-pk")
    )
    page = Paginator(entries, 25).get_page(request.GET.get("page"))
    return render(
        request,
        "console/billing.html",
        {
            "account": account,
            "redeem": redeem,
            "alert": alert,
            "page": page,
            "statements": account.statements.all()[:24],
        },
    )


@member_required
def statement(request: HttpRequest, account: Account, pk: int) -> HttpResponse:
    return render(
        request,
        "console/statement.html",
        {"statement": get_object_or_404(Statement, pk=pk, account=account), "account": account},
    )


@member_required
def models(request: HttpRequest, account: Account) -> HttpResponse:
    prices = sorted(prices_current(group_id=account.price_group_id).items())
    served: set[str] = set()
    for channel in Channel.objects.filter(status=Channel.Status.ENABLED).values_list(
        "served_models", flat=True
    ):
        served.update(channel or ())
    return render(
        request,
        "console/models.html",
        {"prices": [(name, price, name in served) for name, price in prices], "account": account},
    )


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
