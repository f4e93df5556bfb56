from django.contrib import admin

from core.money import pico_to_usd

from .models import UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "request_id",
        "account",
        "api_key",
        "model_requested",
        "status",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "upstream_cost_usd",
        "latency_ms",
        "settled_at",
    ]
    list_filter = ["status", "stream", "estimated"]
    search_fields = ["request_id", "model_requested", "user"]
    date_hierarchy = "created_at"
    list_select_related = ["account", "api_key"]
    show_full_result_count = False

    @admin.display(description="Cost")
    def cost_usd(self, obj):
        return f"${pico_to_usd(obj.cost_pico)}"

    @admin.display(description="Upstream cost")
    def upstream_cost_usd(self, obj):
        return f"${pico_to_usd(obj.upstream_cost_pico)}"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
