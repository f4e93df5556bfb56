"""Management API serializers for accounts, members and API keys.

Money is integer micro-USD (1 USD = 1,000,000) everywhere in the API; the ``*_usd``
fields repeat it as exact decimal strings for people reading the JSON.
"""

import ipaddress
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.money import AMOUNT_MAX, COUNT_MAX, micro_to_usd

from .models import Account, ApiKey, AutoStrategy, Membership
from .services import account_create, account_update

MICRO_USD = "Integer micro-USD (1 USD = 1,000,000)."


class StaffOnlyFieldsMixin:
    """Fields that only staff may read (upstream costs, channels, who did what) are
    sent as ``null`` to everyone else, so one documented shape serves both."""

    staff_only_fields: tuple[str, ...] = ()

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = super().to_representation(instance)  # type: ignore[misc]
        request = self.context.get("request")  # type: ignore[attr-defined]
        if not (request is not None and request.user.is_staff):
            for name in self.staff_only_fields:
                data[name] = None
        return data


class AccountSerializer(serializers.ModelSerializer):
    balance = serializers.IntegerField(
        read_only=True,
        help_text=f"Cached ledger balance; moves only with the ledger. {MICRO_USD}",
    )
    held = serializers.IntegerField(
        read_only=True, help_text=f"Set aside for requests in flight. {MICRO_USD}"
    )
    available = serializers.IntegerField(read_only=True, help_text=f"balance - held. {MICRO_USD}")
    overdraft_limit = serializers.IntegerField(
        min_value=0,
        max_value=AMOUNT_MAX,
        required=False,
        help_text=f"How far settlement may take the balance below zero. {MICRO_USD} "
        "Defaults to the configured default overdraft.",
    )
    auto_strategy = serializers.ChoiceField(choices=AutoStrategy.choices, required=False)
    auto_models = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        help_text='Candidates for model "auto", in order; empty: every model the key may use.',
    )
    low_balance_threshold = serializers.IntegerField(
        min_value=0,
        max_value=AMOUNT_MAX,
        required=False,
        allow_null=True,
        help_text=f"Members are emailed once when the balance falls below this. {MICRO_USD}",
    )

    class Meta:
        model = Account
        fields = [
            "id",
            "name",
            "status",
            "price_group",
            "overdraft_limit",
            "concurrency_limit",
            "auto_strategy",
            "auto_models",
            "low_balance_threshold",
            "balance",
            "held",
            "available",
            "created_at",
        ]
        read_only_fields = ["created_at"]
        extra_kwargs = {"concurrency_limit": {"min_value": 1}}

    @transaction.atomic
    def create(self, validated_data: dict[str, Any]) -> Account:
        settings = dict(validated_data)
        threshold = settings.pop("low_balance_threshold", None)
        account = account_create(
            name=settings.pop("name"),
            price_group=settings.pop("price_group"),
            overdraft_limit=settings.pop("overdraft_limit", None),
        )
        if threshold is not None:
            settings["low_balance_threshold"] = threshold
        if settings:
            account = account_update(account=account, values=settings)
        return account

    def update(self, instance: Account, validated_data: dict[str, Any]) -> Account:
        try:
            return account_update(account=instance, values=validated_data)
        except ValueError as exc:
            raise serializers.ValidationError({"overdraft_limit": str(exc)}) from exc


class BalanceSerializer(serializers.Serializer):
    account = serializers.IntegerField(source="pk", read_only=True)
    balance = serializers.IntegerField(read_only=True, help_text=MICRO_USD)
    held = serializers.IntegerField(read_only=True, help_text=MICRO_USD)
    available = serializers.IntegerField(
        read_only=True, help_text=f"balance - held: what new requests can use. {MICRO_USD}"
    )
    balance_usd = serializers.SerializerMethodField(help_text="USD, six decimals.")
    held_usd = serializers.SerializerMethodField(help_text="USD, six decimals.")
    available_usd = serializers.SerializerMethodField(help_text="USD, six decimals.")

    def get_balance_usd(self, obj: Account) -> str:
        return micro_to_usd(obj.balance)

    def get_held_usd(self, obj: Account) -> str:
        return micro_to_usd(obj.held)

    def get_available_usd(self, obj: Account) -> str:
        return micro_to_usd(obj.available)


class _LookupField(serializers.SlugRelatedField):
    """A slug lookup that answers "does not exist" for a value no column can
    hold (PostgreSQL text refuses NUL), instead of failing in the database."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and "\x00" in data:
            self.fail("does_not_exist", slug_name=self.slug_field, value=data.replace("\x00", ""))
        return super().to_internal_value(data)


class MembershipSerializer(serializers.ModelSerializer):
    username = _LookupField(
        source="user",
        slug_field="username",
        queryset=get_user_model().objects.all(),
        help_text="The user to add; a user belongs to one account at most.",
    )
    email = serializers.EmailField(source="user.email", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "account", "user", "username", "email", "role", "created_at"]
        read_only_fields = ["account", "user", "created_at"]

    def validate_username(self, user: Any) -> Any:
        if Membership.objects.filter(user=user).exists():
            raise serializers.ValidationError("This user already belongs to an account.")
        return user


def _ip_or_network(value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise serializers.ValidationError(f"{value!r} is not an IP address or network.") from exc


class ApiKeyPolicySerializer(serializers.Serializer):
    """What may be set on a key, at creation or later."""

    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        help_text="Empty: every model priced in the account's group.",
    )
    ip_allowlist = serializers.ListField(
        child=serializers.CharField(max_length=64, validators=[_ip_or_network]),
        required=False,
        help_text="Addresses or CIDR networks; empty: any client address.",
    )
    rpm_limit = serializers.IntegerField(
        min_value=1, max_value=COUNT_MAX, required=False, allow_null=True
    )
    tpm_limit = serializers.IntegerField(
        min_value=1, max_value=COUNT_MAX, required=False, allow_null=True
    )
    concurrency_limit = serializers.IntegerField(
        min_value=1, max_value=COUNT_MAX, required=False, allow_null=True
    )
    daily_spend_limit = serializers.IntegerField(
        min_value=1,
        max_value=AMOUNT_MAX,
        required=False,
        allow_null=True,
        help_text=f"Per UTC day. {MICRO_USD}",
    )
    monthly_spend_limit = serializers.IntegerField(
        min_value=1,
        max_value=AMOUNT_MAX,
        required=False,
        allow_null=True,
        help_text=f"Per UTC month. {MICRO_USD}",
    )


class ApiKeyCreateSerializer(ApiKeyPolicySerializer):
    account = serializers.PrimaryKeyRelatedField(
        queryset=Account.objects.all(),
        required=False,
        help_text="Staff only (required for staff); a member's key always goes to their account.",
    )


class ApiKeySerializer(serializers.ModelSerializer):
    display = serializers.CharField(
        read_only=True, help_text="Prefix and last four characters; the secret is never shown."
    )
    status = serializers.ChoiceField(
        source="state",
        read_only=True,
        choices=["active", "revoked", "expired"],
        help_text="An active key past its expiry is `expired`: refused like a revoked one.",
    )
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "account",
            "name",
            "prefix",
            "display",
            "status",
            "expires_at",
            "allowed_models",
            "ip_allowlist",
            "rpm_limit",
            "tpm_limit",
            "concurrency_limit",
            "daily_spend_limit",
            "monthly_spend_limit",
            "created_by",
            "created_at",
            "revoked_at",
        ]
        read_only_fields = fields


class ApiKeyCreatedSerializer(ApiKeySerializer):
    # Plain text rather than the key status enum, which the schema then names once.
    status = serializers.CharField(read_only=True, help_text='Always "active" for a new key.')
    secret = serializers.SerializerMethodField(
        help_text="The key itself. Shown in this response only: it is not stored."
    )

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "secret"]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField())
    def get_secret(self, obj: ApiKey) -> str:
        return self.context["secret"]
