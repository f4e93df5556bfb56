"""The console pages of an account: dashboard and API keys."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.models import Account, ApiKey
from accounts.services import KeyPolicyError, api_key_create, api_key_revoke, api_key_update
from billing.selectors import prices_current
from console.auth import member_required, signed_in
from console.forms import ApiKeyForm
from usage.reports import daily_spend_by_model, recent_requests, spend_totals

_NEW_SECRET = "tollgate-new-key"  # noqa: S105 - a session key name, not a secret


@member_required
def dashboard(request: HttpRequest, account: Account) -> HttpResponse:
    return render(
        request,
        "console/dashboard.html",
        {
            "account": account,
            "totals": spend_totals(account_id=account.pk),
            "chart": daily_spend_by_model(account_id=account.pk),
            "recent": recent_requests(account_id=account.pk),
            "low_balance": account.low_balance_threshold is not None
            and account.balance < account.low_balance_threshold,
        },
    )


def _models(account: Account) -> list[str]:
    return sorted(prices_current(group_id=account.price_group_id))


@member_required
def keys(request: HttpRequest, account: Account) -> HttpResponse:
    form = ApiKeyForm(request.POST or None, models=_models(account))
    if request.method == "POST" and form.is_valid():
        try:
            key, secret = api_key_create(
                account=account, created_by=signed_in(request), **form.policy()
            )
        except KeyPolicyError as exc:
            form.refused(exc)
        else:
            # Shown once, on the next page, then forgotten.
            request.session[_NEW_SECRET] = {"id": key.pk, "secret": secret}
            return redirect("key_created", pk=key.pk)
    return render(
        request,
        "console/keys.html",
        {
            "form": form,
            "keys": account.api_keys.order_by("status", "-created_at"),
        },
    )


@member_required
def key_created(request: HttpRequest, account: Account, pk: int) -> HttpResponse:
    key = get_object_or_404(ApiKey, pk=pk, account=account)
    pending = request.session.pop(_NEW_SECRET, None)
    secret = pending["secret"] if pending and pending["id"] == key.pk else None
    base = request.build_absolute_uri("/v1")
    return render(request, "console/key_created.html", {"key": key, "secret": secret, "base": base})


@member_required
def key_edit(request: HttpRequest, account: Account, pk: int) -> HttpResponse:
    key = get_object_or_404(ApiKey, pk=pk, account=account)
    form = ApiKeyForm(
        request.POST or None, initial=ApiKeyForm.initial_for(key), models=_models(account)
    )
    if request.method == "POST" and form.is_valid():
        values = form.policy()
        changed = [f for f, v in values.items() if getattr(key, f) != v]
        for field in changed:
            setattr(key, field, values[field])
        try:
            api_key_update(api_key=key, fields=changed)
        except KeyPolicyError as exc:
            form.refused(exc)
            key.refresh_from_db()
        else:
            messages.success(request, f"Saved the limits of “{key.name}”.")
            return redirect("keys")
    return render(request, "console/key_edit.html", {"form": form, "key": key})


@require_POST
@member_required
def key_revoke(request: HttpRequest, account: Account, pk: int) -> HttpResponse:
    key = get_object_or_404(ApiKey, pk=pk, account=account)
    api_key_revoke(api_key=key)
    messages.success(request, f"Revoked “{key.name}”. Requests with it are refused from now on.")
    return redirect("keys")
