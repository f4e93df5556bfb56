"""The console's billing pages, and the admin's overview."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from accounts.models import Account
from accounts.services import account_low_balance_set
from billing.models import Entry, ModelPrice, Statement
from billing.pricing import UNITS, Component, Price
from billing.selectors import prices_current
from billing.services import RedemptionError, redemption_redeem
from console.auth import member_required, signed_in
from console.forms import LowBalanceForm, RedeemForm
from console.templatetags.console import rate
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


# The token rates every chat row shows in a column of its own.
_COLUMNS = ("input", "cache_read", "cache_write", "output", "reasoning")
# The modes billed by the token, whose rows show every token column.
_TOKEN_MODES = (ModelPrice.Mode.CHAT, ModelPrice.Mode.COMPLETION, ModelPrice.Mode.EMBEDDING)


def _component_text(price: Price, component: Component) -> str:
    """One component in words, at the rate the account pays (its group's multiplier
    applied): "Images 1024x1024 hd: $0.08 per image"."""
    label = UNITS[component.unit].label
    if component.unit == "tool_call" and component.tool:
        label = component.tool.replace("_", " ").capitalize() + " calls"
    conditions = [v for v in (component.size, component.quality) if v]
    if component.service_tier:
        conditions.append(f"{component.service_tier} tier")
    if component.above:
        conditions.append(f"prompts above {component.above:,} tokens")
    where = f" ({', '.join(conditions)})" if conditions else ""
    return (
        f"{label}{where}: {rate(component.rate * price.multiplier)} per {UNITS[component.unit].per}"
    )


def price_row(name: str, price: Price, served: bool) -> dict:
    """What the models page shows of one price: the five token rates (each after its
    fallback) and every other component in words."""
    # An embedding is all input: its other token rates mean nothing to its users. A
    # media model (images, audio, rerank, moderations) neither caches nor reasons: it
    # shows the token rates it has, not the ones a chat model's would fall back to.
    embedding = price.mode == ModelPrice.Mode.EMBEDDING
    if embedding:
        shown: tuple[str, ...] = ("input",)
    elif price.mode in _TOKEN_MODES:
        shown = _COLUMNS
    else:
        shown = tuple(u for u in _COLUMNS if any(c.unit == u for c in price.components))
    columns = {u: price.rate(u) if u in shown else None for u in _COLUMNS}
    plain = {u for u in shown if any(c.unit == u and c.plain for c in price.components)}
    others = [
        _component_text(price, c)
        for c in price.ordered()
        if not (c.unit in plain and c.plain)
        and not (embedding and c.unit != "input" and UNITS[c.unit].group != "other")
    ]
    return {
        "name": name,
        "mode": price.mode,
        "mode_label": dict(ModelPrice.Mode.choices).get(price.mode, price.mode),
        "tokens": price.mode in _TOKEN_MODES or bool(plain),
        "rates": columns,
        # The cache and reasoning rates, on a line of their own on a phone.
        "more_rates": any(u in shown for u in ("cache_read", "cache_write", "reasoning")),
        "others": others,
        "served": served,
    }


@member_required
def models(request: HttpRequest, account: Account) -> HttpResponse:
    prices = sorted(prices_current(group_id=account.price_group_id).items())
    served: set[str] = set()
    for channel in Channel.objects.filter(status=Channel.Status.ENABLED).values_list(
        "served_models", flat=True
    ):
        served.update(channel or ())
    multiplier = account.price_group.multiplier
    return render(
        request,
        "console/models.html",
        {
            "rows": [price_row(name, price, name in served) for name, price in prices],
            "account": account,
            "multiplier": multiplier if multiplier != 1 else None,
        },
    )
