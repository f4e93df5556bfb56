from django import forms
from django.contrib import admin
from django.utils.html import format_html

from .channels import channel_create, channel_update
from .models import Channel
from .providers import passes_responses_through, provider_for
from .selectors import channel_cache_invalidate, channel_models_without_cost
from .serializers import RESPONSES_API_TYPES


class ChannelForm(forms.ModelForm):
    # Write-only: the stored key is never sent back to the browser.
    base_url = forms.URLField(max_length=500, required=False, assume_scheme="https")
    upstream_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the current key.",
    )

    class Meta:
        model = Channel
        fields = [
            "name",
            "type",
            "base_url",
            "served_models",
            "model_mapping",
            "priority",
            "weight",
            "status",
            "disabled_reason",
            "request_timeout",
            "responses_api",
            "cost_prices",
        ]

    def clean(self) -> dict:
        cleaned = super().clean() or {}
        if cleaned.get("responses_api") and not passes_responses_through(cleaned.get("type", "")):
            self.add_error("responses_api", RESPONSES_API_TYPES)
        return cleaned


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = [
        "name",
        "type",
        "base_url",
        "priority",
        "weight",
        "status",
        "responses_api",
        "health_state",
        "last_error",
        "has_key",
        "cost_prices_state",
    ]
    list_filter = ["type", "status"]
    search_fields = ["name", "base_url"]
    actions = ["disable", "enable"]
    readonly_fields = ["health_state", "cooling_until", "last_error", "last_error_at"]

    @admin.display(description="Health")
    def health_state(self, obj: Channel) -> str:
        return obj.health

    @admin.display(description="Cost prices")
    def cost_prices_state(self, obj: Channel) -> str:
        missing = channel_models_without_cost(obj)
        if missing:
            return format_html(
                '<strong style="color:#b35c00">Missing for {}: margin overstated</strong>',
                ", ".join(missing),
            )
        return "Set" if provider_for(obj.type).charges else "Not needed (it charges nothing)"

    @admin.display(boolean=True, description="Key set")
    def has_key(self, obj: Channel) -> bool:
        return bool(obj.api_key_encrypted)

    def save_model(self, request, obj, form, change):
        values = {name: form.cleaned_data[name] for name in ChannelForm.Meta.fields}
        if form.cleaned_data.get("upstream_key"):
            values["api_key"] = form.cleaned_data["upstream_key"]
        if change:
            channel_update(channel=obj, values=values)
        else:
            obj.pk = channel_create(values=values).pk

    @admin.action(description="Disable selected channels")
    def disable(self, request, queryset):
        queryset.update(status=Channel.Status.DISABLED)
        channel_cache_invalidate()

    @admin.action(description="Enable selected channels (and clear their cool-down)")
    def enable(self, request, queryset):
        for channel in queryset:
            channel_update(channel=channel, values={"status": Channel.Status.ENABLED})
