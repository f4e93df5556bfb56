from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from billing.pricing import micro_to_usd, usd_to_micro
from billing.services import LedgerError, account_adjust, account_credit

from .models import Account, ApiKey, Membership
from .services import (
    ACCOUNT_SETTINGS,
    KeyPolicyError,
    account_create,
    account_update,
    api_key_create,
    api_key_policy_check,
    api_key_revoke,
    api_key_update,
)


def usd(amount: int | None) -> str:
    """Micro-USD as the admin shows money: "$1.234567", "-$0.000500", "—" for none."""
    if amount is None:
        return "—"
    text = micro_to_usd(amount)
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class CreditForm(forms.Form):
    amount_usd = forms.DecimalField(
        label="Amount (USD)",
        max_digits=14,
        decimal_places=6,
        help_text="Positive for a top-up; an adjustment may be negative.",
    )
    kind = forms.ChoiceField(choices=[("topup", "Top-up"), ("adjustment", "Adjustment")])
    memo = forms.CharField(
        max_length=500, help_text="Shown on the customer's ledger; the reason, for an adjustment."
    )

    def clean(self):
        data = super().clean() or {}
        amount = data.get("amount_usd")
        if amount is not None:
            if amount == 0:
                self.add_error("amount_usd", "The amount must not be zero.")
            elif data.get("kind") == "topup" and amount < 0:
                self.add_error("amount_usd", "A top-up must be positive; use an adjustment.")
        return data


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "price_group", "balance_usd", "held_usd", "available_usd"]
    list_filter = ["status", "price_group"]
    search_fields = ["name"]
    readonly_fields = ["balance_usd", "held_usd", "available_usd", "created_at", "credit_link"]
    fields = [
        "name",
        "status",
        "price_group",
        "overdraft_limit",
        "concurrency_limit",
        "auto_strategy",
        "auto_models",
        "balance_usd",
        "held_usd",
        "available_usd",
        "credit_link",
        "created_at",
    ]
    inlines = [MembershipInline]

    @admin.display(description="Balance")
    def balance_usd(self, obj: Account) -> str:
        return usd(obj.balance)

    @admin.display(description="Held")
    def held_usd(self, obj: Account) -> str:
        return usd(obj.held)

    @admin.display(description="Available")
    def available_usd(self, obj: Account) -> str:
        return usd(obj.available)

    @admin.display(description="Credit")
    def credit_link(self, obj: Account) -> str:
        if not obj.pk:
            return "-"
        url = reverse("admin:accounts_account_credit", args=[obj.pk])
        return format_html('<a class="button" href="{}">Top up or adjust…</a>', url)

    def save_model(self, request, obj, form, change):
        if change:
            # Balance and held are never edited here: they move only with the ledger.
            settings = {f: form.cleaned_data[f] for f in form.changed_data if f in ACCOUNT_SETTINGS}
            try:
                account_update(account=obj, values=settings)
            except ValueError as exc:
                self.message_user(request, str(exc), messages.ERROR)
        else:
            created = account_create(
                name=obj.name, price_group=obj.price_group, overdraft_limit=obj.overdraft_limit
            )
            obj.pk = created.pk
            obj.refresh_from_db()

    def get_urls(self):
        credit = path(
            "<int:pk>/credit/",
            self.admin_site.admin_view(self.credit_view),
            name="accounts_account_credit",
        )
        return [credit, *super().get_urls()]

    def credit_view(self, request: HttpRequest, pk: int):
        if not request.user.has_perm("billing.add_transaction"):
            raise PermissionDenied
        account = get_object_or_404(Account, pk=pk)
        form = CreditForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            amount = usd_to_micro(form.cleaned_data["amount_usd"])
            staff = request.user
            try:
                with transaction.atomic():
                    if form.cleaned_data["kind"] == "adjustment":
                        account_adjust(
                            account=account,
                            amount=amount,
                            reason=form.cleaned_data["memo"],
                            staff=staff,  # type: ignore[arg-type]  # admin_view: staff only
                        )
                    else:
                        account_credit(
                            account=account,
                            amount=amount,
                            memo=form.cleaned_data["memo"],
                            created_by=staff,  # type: ignore[arg-type]
                        )
            except LedgerError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(
                    request, f"Posted {usd(amount)} to {account.name}.", messages.SUCCESS
                )
                return HttpResponseRedirect(
                    reverse("admin:accounts_account_change", args=[account.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Top up or adjust {account.name}",
            "account": account,
            "form": form,
            "opts": self.model._meta,
            "balance": usd(account.balance),
            "available": usd(account.available),
        }
        return TemplateResponse(request, "admin/accounts/account/credit.html", context)


class ApiKeyPolicyForm(forms.ModelForm):
    """A key's policy as the admin edits it, judged as the services judge it."""

    def clean(self):
        data = super().clean() or {}
        account = data.get("account") or getattr(self.instance, "account", None)
        if account is not None:
            changed = self.changed_data
            try:
                api_key_policy_check(
                    account,
                    expires_at=data.get("expires_at") if "expires_at" in changed else None,
                    allowed_models=data.get("allowed_models")
                    if "allowed_models" in changed
                    else None,
                )
            except KeyPolicyError as exc:
                for field, message in exc.errors.items():
                    self.add_error(field, message)
        return data


class ApiKeyCreateForm(ApiKeyPolicyForm):
    class Meta:
        model = ApiKey
        fields = [
            "account",
            "name",
            "expires_at",
            "allowed_models",
            "ip_allowlist",
            "rpm_limit",
            "tpm_limit",
            "concurrency_limit",
            "daily_spend_limit",
            "monthly_spend_limit",
        ]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "display",
        "account",
        "state",
        "spend_limits",
        "expires_at",
        "created_at",
    ]
    list_filter = ["status"]
    search_fields = ["name", "prefix", "account__name"]
    actions = ["revoke"]
    readonly_fields = ["display", "status", "created_by", "created_at", "revoked_at"]
    exclude = ["key_hash", "prefix", "last4"]

    @admin.display(description="status", ordering="status")
    def state(self, obj: ApiKey) -> str:
        return obj.state

    form = ApiKeyPolicyForm

    @admin.display(description="Spend limits")
    def spend_limits(self, obj: ApiKey) -> str:
        limits = [
            f"{usd(amount)} per {period}"
            for amount, period in [
                (obj.daily_spend_limit, "day"),
                (obj.monthly_spend_limit, "month"),
            ]
            if amount is not None
        ]
        return ", ".join(limits) or "none"

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, *(["account"] if obj else [])]

    def save_model(self, request, obj, form, change):
        if change:
            api_key_update(api_key=obj, fields=form.changed_data)
            return
        data = {f: form.cleaned_data.get(f) for f in ApiKeyCreateForm.Meta.fields}
        created, secret = api_key_create(created_by=request.user, **data)
        obj.pk = created.pk
        obj.refresh_from_db()
        self.message_user(
            request,
            format_html(
                "Key created. Copy it now, it will not be shown again: <code>{}</code>", secret
            ),
            messages.WARNING,
        )

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        count = 0
        for key in queryset.filter(status=ApiKey.Status.ACTIVE):
            api_key_revoke(api_key=key)
            count += 1
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "account", "role", "created_at"]
    search_fields = ["user__username", "account__name"]
    autocomplete_fields = ["user", "account"]
