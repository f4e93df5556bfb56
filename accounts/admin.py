from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from core.money import micro_to_usd

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


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "price_group", "balance_usd", "held_usd", "available_usd"]
    list_filter = ["status", "price_group"]
    search_fields = ["name"]
    readonly_fields = ["balance_usd", "held_usd", "available_usd", "created_at"]
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
