from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery, Sum
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts.admin import AccountAdmin, usd
from accounts.models import Account
from core.money import usd_to_micro

from .models import (
    Entry,
    Hold,
    LedgerAccount,
    ModelPrice,
    PriceComponent,
    PriceGroup,
    RedemptionCode,
    Statement,
    Transaction,
)
from .pricing import UNITS, PriceError, decimal_text
from .selectors import price_cache_invalidate, price_of
from .services import (
    LedgerError,
    account_adjust,
    account_credit,
    components_checked,
    model_price_set,
    redemption_codes_create,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """The ledger is append-only: postings are made by services, never by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ModelPriceInline(admin.TabularInline):
    """The group's price versions, newest first; a version is added on its own page."""

    model = ModelPrice
    extra = 0
    fields = ("model", "mode", "components_summary", "effective_from")
    readonly_fields = ("model", "mode", "components_summary", "effective_from")
    ordering = ["model", "-effective_from"]
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="Components")
    def components_summary(self, obj: ModelPrice) -> str:
        return components_text(obj)


def components_text(price: ModelPrice) -> str:
    """A version's components in one line: "input 2.50 per 1M tokens; ..."."""
    parts = []
    for c in price_of(price).ordered():
        text = f"{c.unit} {c.describe()['rate']} per {UNITS[c.unit].per}"
        conditions = ", ".join(f"{k} {v}" for k, v in c.conditions().items())
        parts.append(f"{text} ({conditions})" if conditions else text)
    return "; ".join(parts)


@admin.register(PriceGroup)
class PriceGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "multiplier", "description", "created_at"]
    search_fields = ["name"]
    inlines = [ModelPriceInline]
    change_form_template = "admin/billing/pricegroup/change_form.html"

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        price_cache_invalidate(group_id=obj.pk)

    def get_urls(self):
        catalogue = path(
            "<int:pk>/import/",
            self.admin_site.admin_view(self.import_view),
            name="billing_pricegroup_import",
        )
        return [catalogue, *super().get_urls()]

    def import_view(self, request: HttpRequest, pk: int):
        from .catalogue import catalogue_admin_view

        if not request.user.has_perm("billing.add_modelprice"):
            raise PermissionDenied
        return catalogue_admin_view(self, request, get_object_or_404(PriceGroup, pk=pk))


COMPONENT_FIELDS = ("unit", "rate", "above", "size", "quality", "tool", "service_tier")


class PriceComponentForm(forms.ModelForm):
    class Meta:
        model = PriceComponent
        fields = COMPONENT_FIELDS
        # Narrow inputs: a version's components fit the page without scrolling sideways.
        widgets = {
            "rate": forms.TextInput(attrs={"size": 12}),
            "above": forms.NumberInput(attrs={"style": "width: 7em"}),
            **{f: forms.TextInput(attrs={"size": 10}) for f in ("size", "quality", "tool")},
            "service_tier": forms.TextInput(attrs={"size": 8}),
        }

    def clean(self):
        data = super().clean() or {}
        if self.errors or data.get("DELETE"):
            return data
        try:
            components_checked([{k: data.get(k) for k in COMPONENT_FIELDS}])
        except PriceError as exc:
            self.add_error(exc.field if exc.field in COMPONENT_FIELDS else None, str(exc))
        return data


class PriceComponentFormSet(forms.BaseInlineFormSet):
    def clean(self):
        super().clean()
        if any(self.errors):
            return
        specs = [
            {k: f.cleaned_data.get(k) for k in COMPONENT_FIELDS}
            for f in self.forms
            if f.cleaned_data and not f.cleaned_data.get("DELETE")
        ]
        try:
            components_checked(specs)
        except PriceError as exc:
            raise forms.ValidationError(str(exc)) from None


class PriceComponentInline(admin.TabularInline):
    model = PriceComponent
    form = PriceComponentForm
    formset = PriceComponentFormSet
    extra = 0
    min_num = 1

    def get_extra(self, request, obj=None, **kwargs):
        if obj is None:
            return len(self.initial(request)) or 2
        return 0

    def get_min_num(self, request, obj=None, **kwargs):
        return 0 if obj is None and self.initial(request) else 1

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return obj is None

    def get_fields(self, request, obj=None):
        if obj is None:
            return COMPONENT_FIELDS
        # A published version is shown, not edited: its rates as people write them.
        return ("unit", "rate_shown", *COMPONENT_FIELDS[2:])

    def get_readonly_fields(self, request, obj=None):
        return ("rate_shown",) if obj is not None else ()

    @admin.display(description="Rate (USD)")
    def rate_shown(self, obj: PriceComponent) -> str:
        return f"{decimal_text(obj.rate)} per {UNITS[obj.unit].per}"

    @staticmethod
    def initial(request) -> list[dict[str, Any]]:
        """A new version starts from the components of the one it is based on
        (``?from=<version id>``)."""
        base = request.GET.get("from")
        if request.method != "GET" or not base or not base.isdigit():
            return []
        rows = PriceComponent.objects.filter(price_id=int(base)).order_by("pk")
        return [
            {**row, "rate": decimal_text(row["rate"])} for row in rows.values(*COMPONENT_FIELDS)
        ]


class ModelPriceForm(forms.ModelForm):
    class Meta:
        model = ModelPrice
        fields = ["group", "model", "mode", "effective_from"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields.get("effective_from")
        if field is None:  # a version shown, read-only
            return
        field.required = False
        field.help_text = (
            "When this version starts to apply (empty: now). Requests already made keep "
            "the price they were charged."
        )

    def clean_effective_from(self):
        value = self.cleaned_data.get("effective_from")
        if value is not None and value < timezone.now():
            raise forms.ValidationError("A price applies to later requests only.")
        return value


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """Price versions. A change is a new version (``New version`` on a version's page
    starts one from its components); past requests keep the price they had."""

    list_display = ["model", "group", "mode", "components_summary", "effective_from"]
    list_filter = ["group", "mode"]
    search_fields = ["model"]
    inlines = [PriceComponentInline]
    form = ModelPriceForm
    change_form_template = "admin/billing/modelprice/change_form.html"

    def has_change_permission(self, request, obj=None):
        return False

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        base = request.GET.get("from")
        if base and base.isdigit():
            version = ModelPrice.objects.filter(pk=int(base)).first()
            if version is not None:
                initial["group"] = str(version.group_id)
                initial["model"] = version.model
                initial["mode"] = version.mode
        return initial

    def get_formset_kwargs(self, request, obj, inline, prefix):
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if obj.pk is None and isinstance(inline, PriceComponentInline):
            initial = inline.initial(request)
            if initial:
                kwargs["initial"] = initial
        return kwargs

    @admin.display(description="Components")
    def components_summary(self, obj: ModelPrice) -> str:
        return components_text(obj)

    def save_model(self, request, obj, form, change):
        # Saved with its components, in one service call (``save_related``).
        pass

    def save_related(self, request, form, formsets, change):
        components = [
            {k: f.cleaned_data.get(k) for k in COMPONENT_FIELDS}
            for formset in formsets
            for f in formset.forms
            if f.cleaned_data and not f.cleaned_data.get("DELETE")
        ]
        obj = form.instance
        version = model_price_set(
            group_id=obj.group_id,
            model=obj.model,
            mode=obj.mode,
            effective_from=obj.effective_from,
            components=components,
        )
        obj.pk = version.pk
        obj.effective_from = version.effective_from
        obj.created_at = version.created_at
        # What the admin's history says was added with the version.
        for formset in formsets:
            formset.new_objects = list(version.components.all())
            formset.changed_objects = []
            formset.deleted_objects = []


class EntryInline(admin.TabularInline):
    model = Entry
    extra = 0
    fields = ["ledger_account", "amount_usd", "model", "channel", "created_at"]
    readonly_fields = ["ledger_account", "amount_usd", "model", "channel", "created_at"]

    @admin.display(description="Amount")
    def amount_usd(self, obj):
        return usd(obj.amount)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Transaction)
class TransactionAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "kind",
        "account",
        "balance_change",
        "memo",
        "created_by",
        "created_at",
    ]
    list_filter = ["kind"]
    search_fields = ["idempotency_key", "memo", "account__name"]
    list_select_related = ["account", "created_by"]
    inlines = [EntryInline]

    def get_queryset(self, request):
        # A subquery, not a join and GROUP BY: it runs for the rows on the page only.
        on_own_account = (
            Entry.objects.filter(
                transaction=OuterRef("pk"), ledger_account__account_id=OuterRef("account_id")
            )
            .values("transaction")
            .annotate(total=Sum("amount"))
            .values("total")
        )
        return super().get_queryset(request).annotate(balance_change=Subquery(on_own_account))

    @admin.display(description="Customer balance change")
    def balance_change(self, obj):
        # What the posting did to the customer's balance, as the customer sees it:
        # + for a top-up, - for a usage charge. The house side is in the entries.
        return usd(obj.balance_change)


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "transaction",
        "ledger_account",
        "amount_usd",
        "model",
        "channel",
        "created_at",
    ]
    list_filter = ["ledger_account__kind"]
    search_fields = ["ledger_account__code", "model"]

    @admin.display(description="Amount")
    def amount_usd(self, obj):
        return usd(obj.amount)


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = ["code", "kind", "account"]
    list_filter = ["kind"]
    search_fields = ["code"]


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "account",
        "request_id",
        "amount_usd",
        "status",
        "created_at",
        "resolved_at",
    ]
    list_filter = ["status"]
    search_fields = ["request_id", "account__name"]

    @admin.display(description="Amount")
    def amount_usd(self, obj):
        return usd(obj.amount)


class RedemptionCodesForm(forms.Form):
    amount_usd = forms.DecimalField(
        label="Value (USD)", min_value=Decimal("0.000001"), max_digits=14, decimal_places=6
    )
    count = forms.IntegerField(min_value=1, max_value=1000, initial=1)
    memo = forms.CharField(max_length=200, required=False)
    expires_at = forms.DateTimeField(required=False, help_text="Optional, e.g. 2027-01-31 23:59")


@admin.register(RedemptionCode)
class RedemptionCodeAdmin(ReadOnlyAdmin):
    list_display = [
        "__str__",
        "amount_usd",
        "memo",
        "created_at",
        "expires_at",
        "redeemed_by",
        "redeemed_at",
    ]
    list_filter = [("redeemed_at", admin.EmptyFieldListFilter)]
    search_fields = ["last4", "memo", "redeemed_by__name"]
    exclude = ["code_hash"]
    change_list_template = "admin/billing/redemptioncode/change_list.html"

    @admin.display(description="Value")
    def amount_usd(self, obj):
        return usd(obj.amount)

    def get_urls(self):
        create = path(
            "create/",
            self.admin_site.admin_view(self.create_view),
            name="billing_redemptioncode_create",
        )
        return [create, *super().get_urls()]

    def create_view(self, request):
        if not request.user.has_perm("billing.add_transaction"):
            raise PermissionDenied
        form = RedemptionCodesForm(request.POST or None)
        codes: list[str] = []
        if request.method == "POST" and form.is_valid():
            codes = redemption_codes_create(
                amount=usd_to_micro(form.cleaned_data["amount_usd"]),
                count=form.cleaned_data["count"],
                memo=form.cleaned_data["memo"],
                created_by=request.user,
                expires_at=form.cleaned_data["expires_at"],
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Create redemption codes",
            "form": form,
            "codes": codes,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/billing/redemptioncode/create.html", context)


@admin.register(Statement)
class StatementAdmin(ReadOnlyAdmin):
    list_display = [
        "account",
        "period_start",
        "opening_usd",
        "credits_usd",
        "charges_usd",
        "closing_usd",
        "generated_at",
    ]
    list_filter = ["period_start"]
    search_fields = ["account__name"]

    @admin.display(description="Opening")
    def opening_usd(self, obj):
        return usd(obj.opening)

    @admin.display(description="Credits")
    def credits_usd(self, obj):
        return usd(obj.credits)

    @admin.display(description="Charges")
    def charges_usd(self, obj):
        return usd(obj.charges)

    @admin.display(description="Closing")
    def closing_usd(self, obj):
        return usd(obj.closing)


# -- accounts, with the money moved onto them ----------------------------------------


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


class AccountMoneyAdmin(AccountAdmin):
    """The account admin, with the top-up and adjustment that go through the ledger."""

    readonly_fields = [*AccountAdmin.readonly_fields, "credit_link"]
    fields = [*AccountAdmin.fields[:-1], "credit_link", AccountAdmin.fields[-1]]

    @admin.display(description="Credit")
    def credit_link(self, obj: Account) -> str:
        if not obj.pk:
            return "-"
        url = reverse("admin:accounts_account_credit", args=[obj.pk])
        return format_html('<a class="button" href="{}">Top up or adjust…</a>', url)

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
                # Each is one durable transaction of its own.
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


admin.site.unregister(Account)
admin.site.register(Account, AccountMoneyAdmin)
