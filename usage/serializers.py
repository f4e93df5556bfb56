"""Management API serializers for usage records and their filters."""

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.serializers import MICRO_USD, StaffOnlyFieldsMixin
from core.money import pico_to_micro, pico_to_usd

from .models import UsageRecord


class UsageFilterSerializer(serializers.Serializer):
    """The query parameters of the usage log and its export."""

    def get_fields(self) -> dict[str, serializers.Field]:
        # ``from`` is a Python keyword, so the fields are listed here, not as attributes.
        return {
            "account": serializers.IntegerField(
                required=False, help_text="Staff only: one account."
            ),
            "key": serializers.IntegerField(required=False, help_text="An API key id."),
            "model": serializers.CharField(required=False, help_text="Model asked for or served."),
            "status": serializers.ChoiceField(choices=UsageRecord.Status.choices, required=False),
            "from": serializers.DateTimeField(
                required=False, help_text="ISO 8601; records at or after this moment."
            ),
            "to": serializers.DateTimeField(
                required=False, help_text="ISO 8601; records before this moment."
            ),
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "from" in attrs and "to" in attrs and attrs["from"] >= attrs["to"]:
            raise serializers.ValidationError({"to": "Must be later than from."})
        return attrs


class UsageRecordSerializer(StaffOnlyFieldsMixin, serializers.ModelSerializer):
    """One request as served and billed. Token kinds are disjoint, each billed once."""

    api_key_name = serializers.CharField(
        source="api_key.name", read_only=True, allow_null=True, default=None
    )
    cost = serializers.SerializerMethodField(
        help_text=f"The exact cost rounded to the micro-USD. {MICRO_USD}"
    )
    cost_pico = serializers.IntegerField(
        read_only=True,
        help_text="The exact cost, integer pico-USD (10^-12 USD). The account is charged "
        "the exact sum of its requests' costs, in whole micro-USD, the rest carried.",
    )
    cost_usd = serializers.SerializerMethodField(
        help_text="The exact cost in USD: six decimals, more where it has them."
    )
    price_snapshot = serializers.DictField(
        read_only=True,
        help_text="The price version charged and every component used: unit, rate, per, "
        "conditions, quantity billed and cost.",
    )
    unit_details = serializers.DictField(
        read_only=True,
        help_text='Breakdowns of the units billed: {"images": {"1024x1024/hd": 2}, '
        '"tool_calls": {"web_search": 1}, "service_tier": "flex"}, where used.',
    )
    audio_seconds = serializers.SerializerMethodField(help_text="Seconds of audio billed.")
    upstream_cost = serializers.SerializerMethodField(
        help_text=f"Staff only: owed upstream, rounded. {MICRO_USD}"
    )
    upstream_cost_pico = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="Staff only: owed upstream, pico-USD."
    )
    upstream_model = serializers.CharField(read_only=True, allow_null=True, help_text="Staff only.")
    channel = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="Staff only."
    )
    attempts = serializers.SerializerMethodField(help_text="Staff only: every channel tried.")
    staff_only_fields = (
        "upstream_cost",
        "upstream_cost_pico",
        "upstream_model",
        "channel",
        "attempts",
    )

    class Meta:
        model = UsageRecord
        fields = [
            "id",
            "request_id",
            "created_at",
            "account",
            "api_key",
            "api_key_name",
            "endpoint",
            "model_requested",
            "model_served",
            "status",
            "http_status",
            "error_code",
            "stream",
            "input_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "cache_write_1h_tokens",
            "output_tokens",
            "reasoning_tokens",
            "audio_input_tokens",
            "audio_output_tokens",
            "image_input_tokens",
            "image_output_tokens",
            "images",
            "audio_seconds",
            "characters",
            "search_units",
            "tool_calls",
            "unit_details",
            "estimated",
            "cost",
            "cost_pico",
            "cost_usd",
            "price_snapshot",
            "latency_ms",
            "ttft_ms",
            "user",
            "client_ip",
            "settled_at",
            "upstream_cost",
            "upstream_cost_pico",
            "upstream_model",
            "channel",
            "attempts",
        ]
        read_only_fields = fields

    def get_cost(self, obj: UsageRecord) -> int:
        return pico_to_micro(obj.cost_pico)

    def get_cost_usd(self, obj: UsageRecord) -> str:
        return pico_to_usd(obj.cost_pico)

    def get_audio_seconds(self, obj: UsageRecord) -> float:
        return obj.audio_ms / 1000

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_upstream_cost(self, obj: UsageRecord) -> int:
        return pico_to_micro(obj.upstream_cost_pico)

    @extend_schema_field(serializers.ListField(child=serializers.DictField(), allow_null=True))
    def get_attempts(self, obj: UsageRecord) -> list[dict[str, Any]] | None:
        return obj.attempts
