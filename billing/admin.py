from django.contrib import admin

from accounts.admin import usd

from .models import Entry, Hold, LedgerAccount, ModelPrice, PriceGroup, Transaction
from .selectors import price_cache_invalidate


class ReadOnlyAdmin(admin.ModelAdmin):
    """The ledger is append-only: postings are made by services, never by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ModelPriceInline(admin.TabularInline):
    model = ModelPrice
    extra = 0
    fields = [
        "model",
        "input_per_m",
        "output_per_m",
        "cache_read_per_m",
        "cache_write_per_m",
        "reasoning_per_m",
        "request_fee",
        "effective_from",
    ]


@admin.register(PriceGroup)
class PriceGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "created_at"]
    search_fields = ["name"]
    inlines = [ModelPriceInline]

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        price_cache_invalidate(group_id=form.instance.pk)


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = [
        "model",
        "group",
        "input_per_m",
        "output_per_m",
        "cache_read_per_m",
        "cache_write_per_m",
        "reasoning_per_m",
        "request_fee",
        "effective_from",
    ]
    list_filter = ["group"]
    search_fields = ["model"]

    def has_change_permission(self, request, obj=None):
        # A price change is a new version; past requests keep the price they had.
        return False

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        price_cache_invalidate(group_id=obj.group_id)


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
    list_display = ["id", "kind", "account", "memo", "created_by", "created_at"]
    list_filter = ["kind"]
    search_fields = ["idempotency_key", "memo", "account__name"]
    inlines = [EntryInline]


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
