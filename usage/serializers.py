"""Management API serializers for usage records and their filters."""

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.serializers import MICRO_USD, StaffOnlyFieldsMixin
from core.money import micro_to_usd

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
    cost = serializers.IntegerField(read_only=True, help_text=f"Charged. {MICRO_USD}")
    cost_usd = serializers.SerializerMethodField(help_text="USD, six decimals.")
    price_snapshot = serializers.DictField(
        read_only=True, help_text="The price version charged, USD per 1M tokens."
    )
    upstream_cost = serializers.IntegerField(
        read_only=True, allow_null=True, help_text=f"Staff only. {MICRO_USD}"
    )
    upstream_model = serializers.CharField(read_only=True, allow_null=True, help_text="Staff only.")
    channel = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="Staff only."
    )
    attempts = serializers.SerializerMethodField(help_text="Staff only: every channel tried.")
    staff_only_fields = ("upstream_cost", "upstream_model", "channel", "attempts")

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
            "output_tokens",
            "reasoning_tokens",
            "estimated",
            "cost",
            "cost_usd",
            "price_snapshot",
            "latency_ms",
            "ttft_ms",
            "user",
            "client_ip",
            "settled_at",
            "upstream_cost",
            "upstream_model",
            "channel",
            "attempts",
        ]
        read_only_fields = fields

    def get_cost_usd(self, obj: UsageRecord) -> str:
        return micro_to_usd(obj.cost)

    @extend_schema_field(serializers.ListField(child=serializers.DictField(), allow_null=True))
    def get_attempts(self, obj: UsageRecord) -> list[dict[str, Any]] | None:
        return obj.attempts
