"""The console's billing pages, and the admin's overview."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from accounts.models import Account
from accounts.services import account_low_balance_set
from billing.models import Entry, Statement
from billing.selectors import prices_current
from billing.services import RedemptionError, redemption_redeem
from console.auth import member_required, signed_in
from console.forms import LowBalanceForm, RedeemForm
from core.money import micro_to_usd, usd_to_micro
from relay.models import Channel


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
        Entry.objects.filter(ledger_account__account_id=account.pk)
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
