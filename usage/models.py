from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class UsageRecord(models.Model):
    """One request as served: the source of truth for what a customer is billed.

    Token kinds are disjoint, each billed once at its own price:
    ``input_tokens`` (uncached prompt), ``cache_read_tokens``, ``cache_write_tokens``,
    ``output_tokens`` (completion without reasoning) and ``reasoning_tokens``.
    """

    class Status(models.TextChoices):
        SUCCESS = "success", "Success"
        # Client went away mid-stream; billed for what was delivered.
        CANCELLED = "cancelled", "Cancelled by client"
        # Upstream failed after the stream started; billed for what was delivered.
        INTERRUPTED = "interrupted", "Interrupted upstream"
        # No upstream could serve it; nothing billed.
        UPSTREAM_ERROR = "upstream_error", "Upstream error"
        # The gateway itself failed (a bug, the database gone); billed only for what
        # was delivered before it did.
        FAILED = "failed", "Gateway error"
        # Refused before any upstream call (validation, policy, balance).
        REJECTED = "rejected", "Rejected"

    # Indexed in Meta (a plain b-tree: it is looked up by equality, never by pattern).
    request_id = models.CharField(max_length=128)
    # The account's and the key's rows are found through the (…, -created_at) indexes
    # below; a single-column index of either would be one more write per record.
    account = models.ForeignKey(
        "accounts.Account",
        on_delete=models.PROTECT,
        related_name="usage_records",
        db_index=False,
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey",
        on_delete=models.PROTECT,
        null=True,
        related_name="usage_records",
        db_index=False,
    )
    hold = models.OneToOneField(
        "billing.Hold", on_delete=models.PROTECT, null=True, blank=True, related_name="usage"
    )
    endpoint = models.CharField(max_length=32, default="chat.completions")
    model_requested = models.CharField(max_length=200)
    model_served = models.CharField(max_length=200, blank=True)
    upstream_model = models.CharField(max_length=200, blank=True)
    channel = models.ForeignKey(
        "relay.Channel", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    attempts = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices)
    http_status = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    stream = models.BooleanField(default=False)

    input_tokens = models.PositiveIntegerField(default=0)
    cache_read_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    # True when the completion was counted locally because no upstream usage arrived.
    estimated = models.BooleanField(default=False)

    price_snapshot = models.JSONField(default=dict, blank=True)
    cost = models.BigIntegerField(default=0)  # micro-USD charged to the customer
    upstream_cost = models.BigIntegerField(default=0)  # micro-USD owed upstream

    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    user = models.CharField(max_length=256, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    settled_at = models.DateTimeField(null=True, blank=True)
    # Not indexed: nothing looks records up by their settlement (the reconciliation
    # reads them all), and every settled record would write the index again.
    settlement = models.ForeignKey(
        "billing.Transaction",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(cost__gte=0) & Q(upstream_cost__gte=0), name="usage_cost_nonnegative"
            ),
            models.CheckConstraint(
                condition=Q(status="rejected") | Q(hold__isnull=False) | Q(cost=0),
                name="usage_charged_only_with_hold",
            ),
        ]
        indexes = [
            models.Index(fields=["request_id"], name="usage_request_id"),
            models.Index(fields=["account", "-created_at"]),
            models.Index(fields=["api_key", "-created_at"]),
            models.Index(
                fields=["created_at"], condition=Q(settled_at__isnull=True), name="usage_unsettled"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model_requested} {self.status}"

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def completion_tokens(self) -> int:
        return self.output_tokens + self.reasoning_tokens


class UsageDaily(models.Model):
    """Settled usage summed per UTC day, account, key, model and channel.

    Written by settlement in the same transaction as the ledger postings, so the
    dashboards and the overview read a few rows instead of millions of records."""

    day = models.DateField()
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.CASCADE, null=True, related_name="+"
    )
    model = models.CharField(max_length=200)
    channel = models.ForeignKey(
        "relay.Channel", on_delete=models.SET_NULL, null=True, related_name="+"
    )
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost = models.BigIntegerField(default=0)
    upstream_cost = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "account", "api_key", "model", "channel"],
                name="usagedaily_unique",
                nulls_distinct=False,
            )
        ]
        indexes = [models.Index(fields=["account", "day"]), models.Index(fields=["day"])]

    def __str__(self) -> str:
        return f"{self.day} {self.account_id} {self.model}: {self.requests}"
