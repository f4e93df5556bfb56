"""Management API serializers for prices, the ledger, redemption codes and statements.

Money is integer micro-USD; prices are exact decimal strings in USD per 1M tokens.
"""

import re
from datetime import date
from decimal import Decimal
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from accounts.models import Account
from accounts.serializers import MICRO_USD, StaffOnlyFieldsMixin
from core.money import AMOUNT_MAX, COUNT_MAX, micro_to_usd

from .models import (
    Entry,
    ModelPrice,
    PriceComponent,
    PriceGroup,
    RedemptionCode,
    Statement,
    Transaction,
)
from .pricing import UNIT_CHOICES, UNITS, PriceError, decimal_text
from .selectors import MARGIN_BY
from .services import components_checked
from .statements import month_closed


class PriceGroupSerializer(serializers.ModelSerializer):
    multiplier = serializers.DecimalField(
        max_digits=8,
        decimal_places=4,
        min_value=Decimal(0),
        required=False,
        help_text="Every price of the group is multiplied by this (1.25: a quarter dearer). "
        "A change applies to later requests; each request keeps the one it was charged with.",
    )

    class Meta:
        model = PriceGroup
        fields = ["id", "name", "description", "multiplier", "created_at"]
        read_only_fields = ["created_at"]


class PriceComponentSerializer(serializers.ModelSerializer):
    """One "unit x rate" line of a price version, with its conditions."""

    unit = serializers.ChoiceField(
        choices=UNIT_CHOICES,
        help_text="What is counted: token kinds (input, cache_read, cache_write (5 minutes), "
        "cache_write_1h, output, reasoning, audio_input, audio_output, image_input, "
        "image_output), request, image, audio_second, character, search_unit, tool_call.",
    )
    rate = serializers.DecimalField(
        max_digits=24,
        decimal_places=12,
        min_value=Decimal(0),
        help_text="USD per the unit's quantum (`per`): 1M tokens, one request, one image, one "
        "second of audio, 1M characters, one search unit, 1K tool calls. Exact to the "
        "pico-USD per token, millisecond, character or call.",
    )
    per = serializers.SerializerMethodField(help_text="What the rate is for.")
    above = serializers.IntegerField(
        min_value=0,
        max_value=COUNT_MAX,
        required=False,
        default=0,
        help_text="A context tier: applies, instead of the rate at a lower tier, when the "
        "request's prompt is above this many tokens (0: always).",
    )
    size = serializers.CharField(
        max_length=32, required=False, allow_blank=True, default="", help_text="Images only."
    )
    quality = serializers.CharField(
        max_length=32, required=False, allow_blank=True, default="", help_text="Images only."
    )
    tool = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        default="",
        help_text="Tool calls only: the tool type (web_search, file_search, code_interpreter...).",
    )
    service_tier = serializers.CharField(
        max_length=32,
        required=False,
        allow_blank=True,
        default="",
        help_text="Applies only to requests served in this tier (flex, priority...).",
    )

    class Meta:
        model = PriceComponent
        fields = ["unit", "rate", "per", "above", "size", "quality", "tool", "service_tier"]

    def get_per(self, obj: Any) -> str:
        unit = obj["unit"] if isinstance(obj, dict) else obj.unit
        return UNITS[unit].per

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = super().to_representation(instance)
        # "2.50", not the column's twelve decimals.
        rate = instance["rate"] if isinstance(instance, dict) else instance.rate
        data["rate"] = decimal_text(Decimal(rate))
        return data


class ModelPriceSerializer(serializers.ModelSerializer):
    """One price version: a set of components. Versions are never edited: a change is
    a new version."""

    components = PriceComponentSerializer(
        many=True,
        help_text="At least one. For each unit a request uses, the most specific component "
        "that applies bills it; a token kind without one falls back to the input or output "
        "rate.",
    )
    effective_from = serializers.DateTimeField(
        required=False,
        help_text="When this version starts to apply (default: now). Requests already made "
        "keep the price they were charged.",
    )

    class Meta:
        model = ModelPrice
        fields = ["id", "group", "model", "mode", "components", "effective_from", "created_at"]
        read_only_fields = ["created_at"]
        # The (group, model, effective_from) uniqueness is checked by the database;
        # ``effective_from`` is usually filled in by the service.
        validators: list = []

    def validate_effective_from(self, value: Any) -> Any:
        if value < timezone.now():
            raise serializers.ValidationError(
                "A price applies to later requests only; leave this empty for now."
            )
        return value

    def validate_components(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            components_checked(value)
        except PriceError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = super().to_representation(instance)
        order = {name: i for i, name in enumerate(UNITS)}
        data["components"].sort(
            key=lambda c: (order[c["unit"]], c["above"], c["size"], c["quality"], c["tool"])
        )
        return data


class EntrySerializer(StaffOnlyFieldsMixin, serializers.ModelSerializer):
    ledger_account = serializers.CharField(source="ledger_account.code", read_only=True)
    kind = serializers.CharField(source="ledger_account.kind", read_only=True)
    amount = serializers.IntegerField(
        read_only=True, help_text=f"Positive raises the ledger account's balance. {MICRO_USD}"
    )
    channel = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="Staff only."
    )
    staff_only_fields = ("channel",)

    class Meta:
        model = Entry
        fields = ["id", "ledger_account", "kind", "amount", "model", "channel"]
        read_only_fields = fields


class LedgerTransactionSerializer(StaffOnlyFieldsMixin, serializers.ModelSerializer):
    """A balanced posting. Staff see every entry (they sum to zero); a member sees the
    entries on their own account only."""

    amount = serializers.SerializerMethodField(
        help_text=f"What the transaction did to the account's balance. {MICRO_USD}"
    )
    amount_usd = serializers.SerializerMethodField(help_text="USD, six decimals.")
    entries = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True, help_text="Staff only."
    )
    staff_only_fields = ("created_by",)

    class Meta:
        model = Transaction
        fields = [
            "id",
            "kind",
            "account",
            "amount",
            "amount_usd",
            "memo",
            "created_by",
            "created_at",
            "entries",
        ]
        read_only_fields = fields

    def _entries(self, obj: Transaction) -> list[Entry]:
        cached = getattr(obj, "visible_entries", None)
        if cached is not None:
            return cached
        entries = obj.entries.select_related("ledger_account").order_by("pk")
        request = self.context.get("request")
        if not (request is not None and request.user.is_staff):
            entries = entries.filter(ledger_account__account__isnull=False)
        return list(entries)

    def get_amount(self, obj: Transaction) -> int:
        return sum(
            e.amount for e in self._entries(obj) if e.ledger_account.account_id == obj.account_id
        )

    def get_amount_usd(self, obj: Transaction) -> str:
        return micro_to_usd(self.get_amount(obj))

    @extend_schema_field(EntrySerializer(many=True))
    def get_entries(self, obj: Transaction) -> list[dict[str, Any]]:
        return EntrySerializer(self._entries(obj), many=True, context=self.context).data


class RedemptionCodeSerializer(serializers.ModelSerializer):
    """A code as listed: never the code itself (only its hash is stored)."""

    display = serializers.SerializerMethodField(help_text="The last four characters.")
    amount = serializers.IntegerField(read_only=True, help_text=MICRO_USD)
    state = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = RedemptionCode
        fields = [
            "id",
            "display",
            "amount",
            "memo",
            "state",
            "created_by",
            "created_at",
            "expires_at",
            "redeemed_by",
            "redeemed_at",
        ]
        read_only_fields = fields

    def get_display(self, obj: RedemptionCode) -> str:
        return f"TG-…{obj.last4}"

    @extend_schema_field(serializers.ChoiceField(choices=["unused", "redeemed", "expired"]))
    def get_state(self, obj: RedemptionCode) -> str:
        if obj.redeemed_at is not None:
            return "redeemed"
        if obj.expires_at is not None and obj.expires_at <= timezone.now():
            return "expired"
        return "unused"


class RedemptionCodeCreateSerializer(serializers.Serializer):
    amount = serializers.IntegerField(
        min_value=1, max_value=AMOUNT_MAX, help_text=f"Value of each code. {MICRO_USD}"
    )
    count = serializers.IntegerField(min_value=1, max_value=1000, default=1)
    memo = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    def validate_expires_at(self, value: Any) -> Any:
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("The expiry must be in the future.")
        return value


class RedemptionCodesCreatedSerializer(serializers.Serializer):
    codes = serializers.ListField(
        child=serializers.CharField(),
        help_text="The codes themselves. Shown in this response only: they are not stored.",
    )
    amount = serializers.IntegerField(help_text=MICRO_USD)
    count = serializers.IntegerField()
    memo = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)


class StatementSerializer(serializers.ModelSerializer):
    """One account's month from the ledger: opening + credits + charges = closing."""

    month = serializers.SerializerMethodField(help_text="YYYY-MM")
    opening = serializers.IntegerField(read_only=True, help_text=MICRO_USD)
    credits = serializers.IntegerField(read_only=True, help_text=MICRO_USD)
    charges = serializers.IntegerField(read_only=True, help_text=f"Negative. {MICRO_USD}")
    closing = serializers.IntegerField(read_only=True, help_text=MICRO_USD)
    charge_lines = serializers.ListField(
        child=serializers.DictField(),
        read_only=True,
        help_text="Per-model usage (tokens, requests) and other charges; amounts negative, "
        "micro-USD.",
    )
    credit_lines = serializers.ListField(
        child=serializers.DictField(),
        read_only=True,
        help_text="Credits by kind; amounts positive, micro-USD.",
    )

    class Meta:
        model = Statement
        fields = [
            "id",
            "account",
            "month",
            "period_start",
            "period_end",
            "opening",
            "credits",
            "charges",
            "closing",
            "charge_lines",
            "credit_lines",
            "generated_at",
        ]
        read_only_fields = fields

    def get_month(self, obj: Statement) -> str:
        return f"{obj.period_start:%Y-%m}"


_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class StatementGenerateSerializer(serializers.Serializer):
    account = serializers.PrimaryKeyRelatedField(queryset=Account.objects.all())
    month = serializers.CharField(help_text="A closed month, YYYY-MM (UTC).")

    def validate_month(self, value: str) -> date:
        match = _MONTH.match(value)
        if not match or not 1 <= int(match[2]) <= 12:
            raise serializers.ValidationError("Use the form YYYY-MM, e.g. 2026-10.")
        start = date(int(match[1]), int(match[2]), 1)
        if not month_closed(start):
            raise serializers.ValidationError("Only a month that has ended can be stated.")
        return start


class MarginQuerySerializer(serializers.Serializer):
    """The query parameters of the margin report."""

    def get_fields(self) -> dict[str, serializers.Field]:
        # ``from`` is a Python keyword, so the fields are listed here, not as attributes.
        return {
            "by": serializers.ChoiceField(
                choices=list(MARGIN_BY),
                default="day",
                help_text="One row per UTC day (the day the charge was posted), per model, "
                "per channel or per account.",
            ),
            "from": serializers.DateTimeField(
                required=False,
                help_text="ISO 8601 (a bare date is its UTC midnight); postings at or after "
                "this moment. Default: the start of the last 30 UTC days, today included.",
            ),
            "to": serializers.DateTimeField(
                required=False,
                help_text="ISO 8601; postings before this moment. Default: no end.",
            ),
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "from" in attrs and "to" in attrs and attrs["from"] >= attrs["to"]:
            raise serializers.ValidationError({"to": "Must be later than from."})
        return attrs


class MarginFiguresSerializer(serializers.Serializer):
    revenue = serializers.IntegerField(
        help_text=f"What customers were charged for usage. {MICRO_USD}"
    )
    revenue_usd = serializers.CharField(help_text="USD, six decimals.")
    upstream_cost = serializers.IntegerField(
        help_text=f"What the upstreams charge for that usage, at the channels' cost prices. "
        f"{MICRO_USD}"
    )
    upstream_cost_usd = serializers.CharField(help_text="USD, six decimals.")
    margin = serializers.IntegerField(help_text=f"revenue - upstream_cost. {MICRO_USD}")
    margin_usd = serializers.CharField(help_text="USD, six decimals.")


class MarginRowSerializer(MarginFiguresSerializer):
    """One row; it carries the field it is grouped by (``day``, ``model``, ``channel``
    or ``account``) and, per channel or account, its ``name``."""

    day = serializers.DateField(required=False, help_text="by=day: a UTC day.")
    model = serializers.CharField(required=False, help_text="by=model: the model served.")
    channel = serializers.IntegerField(
        required=False, allow_null=True, help_text="by=channel: the channel's id."
    )
    account = serializers.IntegerField(
        required=False, allow_null=True, help_text="by=account: the account's id."
    )
    name = serializers.CharField(
        required=False, allow_null=True, help_text="by=channel or by=account: its name."
    )
    cost_prices_missing = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="by=channel: models the channel serves without a cost price. Their upstream "
        "cost is booked as zero, so this row's margin is overstated.",
    )


# One report, though it is the margin endpoint's "list".
@extend_schema_serializer(many=False)
class MarginReportSerializer(serializers.Serializer):
    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            "by": serializers.ChoiceField(choices=list(MARGIN_BY)),
            "from": serializers.DateTimeField(),
            "to": serializers.DateTimeField(allow_null=True),
            "rows": MarginRowSerializer(
                many=True, help_text="Days in order; the others by revenue, largest first."
            ),
            "total": MarginFiguresSerializer(help_text="The sum of the rows."),
        }


class CreditSerializer(serializers.Serializer):
    amount = serializers.IntegerField(
        min_value=-AMOUNT_MAX,
        max_value=AMOUNT_MAX,
        help_text=f"{MICRO_USD} A top-up must be positive; an adjustment may be negative.",
    )
    kind = serializers.ChoiceField(choices=[("topup", "Top-up"), ("adjustment", "Adjustment")])
    memo = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        default="",
        help_text="Shown on the customer's ledger; required (the reason) for an adjustment.",
    )
    idempotency_key = serializers.CharField(
        max_length=100,
        required=False,
        help_text="Repeating a request with the same key posts it once and returns the "
        "first posting.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["amount"] == 0:
            raise serializers.ValidationError({"amount": "The amount must not be zero."})
        if attrs["kind"] == "topup" and attrs["amount"] < 0:
            raise serializers.ValidationError(
                {"amount": "A top-up must be positive; use an adjustment."}
            )
        if attrs["kind"] == "adjustment" and not attrs["memo"].strip():
            raise serializers.ValidationError({"memo": "An adjustment needs a reason."})
        return attrs


class RedeemSerializer(serializers.Serializer):
    code = serializers.CharField(max_length=64, help_text="The redemption code, e.g. TG-XXXX-….")
