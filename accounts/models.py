from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from .keys import key_display


class AutoStrategy(models.TextChoices):
    CHEAPEST = "cheapest", "Cheapest"
    FASTEST = "fastest", "Fastest (moving average latency)"
    ORDERED = "ordered", "Ordered list"


class Account(models.Model):
    """The billing tenant. Users are members; money and keys belong to the account."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    price_group = models.ForeignKey(
        "billing.PriceGroup", on_delete=models.PROTECT, related_name="accounts"
    )
    # Micro-USD. ``balance`` is the cached sum of this account's ledger entries and
    # ``held`` the sum of its open holds; both change only in the transaction that
    # writes the matching entries or hold rows.
    balance = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)
    # How far settlement may take the balance below zero when a request costs more
    # than its hold (micro-USD).
    overdraft_limit = models.BigIntegerField(default=0)
    # Requests in flight at once, over all the account's keys (empty: no limit).
    concurrency_limit = models.PositiveIntegerField(null=True, blank=True)
    # How ``model: "auto"`` picks a model among those the key may use.
    auto_strategy = models.CharField(
        max_length=16, choices=AutoStrategy.choices, default=AutoStrategy.CHEAPEST
    )
    # Candidates for ``auto`` (in order, for the ordered strategy); empty: all allowed.
    auto_models = models.JSONField(default=list, blank=True)
    # One email to the members when the balance falls below this (micro-USD); the
    # flag re-arms once the balance is back above it.
    low_balance_threshold = models.BigIntegerField(null=True, blank=True)
    low_balance_alerted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(held__gte=0), name="account_held_nonnegative"),
            models.CheckConstraint(
                condition=Q(overdraft_limit__gte=0), name="account_overdraft_nonnegative"
            ),
            models.CheckConstraint(
                condition=Q(balance__gte=F("held") - F("overdraft_limit")),
                name="account_no_overdraft",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def available(self) -> int:
        return self.balance - self.held


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.user} in {self.account}"


class ApiKey(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        REVOKED = "revoked", "Revoked"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True)
    last4 = models.CharField(max_length=4)
    key_hash = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Empty list: every model priced in the account's group.
    allowed_models = models.JSONField(default=list, blank=True)
    # Empty list: any client address.
    ip_allowlist = models.JSONField(default=list, blank=True)
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveIntegerField(null=True, blank=True)
    concurrency_limit = models.PositiveIntegerField(null=True, blank=True)
    daily_spend_limit = models.BigIntegerField(null=True, blank=True)
    monthly_spend_limit = models.BigIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(daily_spend_limit__isnull=True) | Q(daily_spend_limit__gt=0),
                name="apikey_daily_limit_positive",
            ),
            models.CheckConstraint(
                condition=Q(monthly_spend_limit__isnull=True) | Q(monthly_spend_limit__gt=0),
                name="apikey_monthly_limit_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.display})"

    @property
    def display(self) -> str:
        return key_display(self.prefix, self.last4)

    @property
    def state(self) -> str:
        """What a person should see: ``active``, ``revoked`` or ``expired`` (an active
        key past its expiry is refused like a revoked one)."""
        if self.status == self.Status.ACTIVE and self.expires_at is not None:
            if self.expires_at <= timezone.now():
                return "expired"
        return self.status
