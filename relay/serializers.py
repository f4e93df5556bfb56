"""Management API serializers for upstream channels.

The upstream key is write-only: it is encrypted at rest and never sent back, not
even encrypted; responses only say whether one is set.
"""

from typing import Any

from rest_framework import serializers

from billing.pricing import PriceError, price_spec_components
from billing.services import components_checked

from .channels import channel_create, channel_update
from .models import Channel
from .providers import passes_responses_through, provider_for

RESPONSES_API_TYPES = (
    "Only OpenAI-compatible channels can speak the Responses API; the others have "
    "/v1/responses translated."
)


class ChannelSerializer(serializers.ModelSerializer):
    api_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=True,
        style={"input_type": "password"},
        help_text="The upstream's key. Write-only; omit it to keep the current key, send an "
        "empty string to remove it.",
    )
    has_api_key = serializers.SerializerMethodField(help_text="Whether an upstream key is set.")
    health = serializers.CharField(read_only=True, help_text="healthy, cooling down or disabled.")
    served_models = serializers.ListField(
        child=serializers.CharField(max_length=200),
        help_text="Public model names this channel serves.",
    )
    model_mapping = serializers.DictField(
        child=serializers.CharField(max_length=200),
        required=False,
        help_text="Public model name -> name sent upstream, where they differ.",
    )
    cost_prices = serializers.DictField(
        child=serializers.DictField(),
        required=False,
        help_text="What the upstream charges per model, as the components of a price version: "
        '{"gpt-4o-mini": {"components": [{"unit": "input", "rate": "0.15"}, {"unit": '
        '"output", "rate": "0.60"}]}}, or the per-token shorthand {"gpt-4o-mini": {"input": '
        '"0.15", "output": "0.60", "cache_read": ..., "cache_write": ..., "cache_write_1h": '
        '..., "reasoning": ..., "request_fee": ...}} (USD per 1M tokens; the fee per '
        "request). Stored as components.",
    )

    class Meta:
        model = Channel
        fields = [
            "id",
            "name",
            "type",
            "base_url",
            "api_key",
            "has_api_key",
            "served_models",
            "model_mapping",
            "priority",
            "weight",
            "status",
            "disabled_reason",
            "request_timeout",
            "responses_api",
            "cost_prices",
            "health",
            "cooling_until",
            "last_error",
            "last_error_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "cooling_until",
            "last_error",
            "last_error_at",
            "created_at",
            "updated_at",
        ]
        extra_kwargs = {"weight": {"min_value": 1}, "request_timeout": {"min_value": 0.001}}

    def get_has_api_key(self, obj: Channel) -> bool:
        return bool(obj.api_key_encrypted)

    def validate_cost_prices(self, value: dict[str, Any]) -> dict[str, dict[str, Any]]:
        cleaned: dict[str, dict[str, Any]] = {}
        for model, spec in value.items():
            try:
                components = components_checked(price_spec_components(spec))
            except PriceError as exc:
                raise serializers.ValidationError(f"{model}: {exc}") from None
            # Stored as decimal strings: a JSON number such as 0.15 is not exact as a float.
            cleaned[model] = {
                "components": [
                    {**c.conditions(), "unit": c.unit, "rate": str(c.rate)} for c in components
                ]
            }
        return cleaned

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        kind = attrs.get("type", getattr(self.instance, "type", "openai"))
        base_url = attrs.get("base_url", getattr(self.instance, "base_url", ""))
        if provider_for(kind).needs_base_url and not base_url:
            raise serializers.ValidationError({"base_url": "This channel type needs a base URL."})
        responses_api = attrs.get("responses_api", getattr(self.instance, "responses_api", False))
        if responses_api and not passes_responses_through(kind):
            raise serializers.ValidationError({"responses_api": RESPONSES_API_TYPES})
        return attrs

    def create(self, validated_data: dict[str, Any]) -> Channel:
        return channel_create(values=validated_data)

    def update(self, instance: Channel, validated_data: dict[str, Any]) -> Channel:
        return channel_update(channel=instance, values=validated_data)
