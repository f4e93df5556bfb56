from typing import Any

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from core.money import Units, pico_to_micro

# The token columns of a record, by the ``Units`` field each counts.
TOKEN_COLUMNS = {
    "input": "input_tokens",
    "cache_read": "cache_read_tokens",
    "cache_write": "cache_write_tokens",
    "cache_write_1h": "cache_write_1h_tokens",
    "audio_input": "audio_input_tokens",
    "image_input": "image_input_tokens",
    "output": "output_tokens",
    "reasoning": "reasoning_tokens",
    "audio_output": "audio_output_tokens",
    "image_output": "image_output_tokens",
}
PROMPT_COLUMNS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "audio_input_tokens",
    "image_input_tokens",
)
COMPLETION_COLUMNS = (
    "output_tokens",
    "reasoning_tokens",
    "audio_output_tokens",
    "image_output_tokens",
)
# Every counted unit, as summed in the daily roll-up and the reports.
UNIT_COLUMNS = (
    *PROMPT_COLUMNS,
    *COMPLETION_COLUMNS,
    "images",
    "audio_ms",
    "characters",
    "search_units",
    "tool_calls",
)


def unit_columns(units: Units) -> dict[str, Any]:
    """The record's columns for ``units``, those not at their default (zero, or no
    details): every request writes them, and most of the units are zero."""
    fields: dict[str, Any] = {}
    for f, column in TOKEN_COLUMNS.items():
        count = getattr(units, f)
        if count:
            fields[column] = count
    if units.images:
        fields["images"] = units.image_count
    if units.audio_ms:
        fields["audio_ms"] = units.audio_ms
    if units.characters:
        fields["characters"] = units.characters
    if units.search_units:
        fields["search_units"] = units.search_units
    if units.tool_calls:
        fields["tool_calls"] = units.tool_call_count
    details: dict[str, Any] = {}
    if units.images:
        details["images"] = {f"{s}/{q}": n for s, q, n in units.images}
    if units.tool_calls:
        details["tool_calls"] = dict(units.tool_calls)
    if units.service_tier:
        details["service_tier"] = units.service_tier
    if details:
        fields["unit_details"] = details
    return fields


class UsageRecord(models.Model):
    """One request as served: the source of truth for what a customer is billed.

    Every unit billed is counted, each once (``core.money.Units``): the token kinds
    are disjoint (``input_tokens`` is the uncached text prompt, apart from cache
    reads, cache writes, audio and image tokens; ``output_tokens`` the text
    completion, apart from reasoning, audio and image tokens), then images, audio,
    characters, search units and tool calls.
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
    cache_write_tokens = models.PositiveIntegerField(default=0)  # five-minute writes
    cache_write_1h_tokens = models.PositiveIntegerField(default=0, db_default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    audio_input_tokens = models.PositiveIntegerField(default=0, db_default=0)
    audio_output_tokens = models.PositiveIntegerField(default=0, db_default=0)
    image_input_tokens = models.PositiveIntegerField(default=0, db_default=0)
    image_output_tokens = models.PositiveIntegerField(default=0, db_default=0)
    # The other units billed: images (by size and quality in ``unit_details``),
    # milliseconds of audio, characters of speech input, search units and hosted-tool
    # calls (by tool type in ``unit_details``).
    images = models.PositiveIntegerField(default=0, db_default=0)
    audio_ms = models.PositiveBigIntegerField(default=0, db_default=0)
    characters = models.PositiveIntegerField(default=0, db_default=0)
    search_units = models.PositiveIntegerField(default=0, db_default=0)
    tool_calls = models.PositiveIntegerField(default=0, db_default=0)
    # {"images": {"1024x1024/hd": 2}, "tool_calls": {"web_search": 1},
    #  "service_tier": "flex"}: only what the request had.
    unit_details = models.JSONField(default=dict, blank=True, db_default={})
    # True when the completion was counted locally because no upstream usage arrived.
    estimated = models.BooleanField(default=False)

    # The price version and every component used, with quantities and amounts.
    price_snapshot = models.JSONField(default=dict, blank=True)
    # Exact pico-USD (10**-12 USD): charged to the customer (settlement charges whole
    # micro-USD and carries the rest), and owed upstream at the channel's cost price.
    cost_pico = models.BigIntegerField(default=0)
    upstream_cost_pico = models.BigIntegerField(default=0)

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
                condition=Q(cost_pico__gte=0) & Q(upstream_cost_pico__gte=0),
                name="usage_cost_nonnegative",
            ),
            models.CheckConstraint(
                condition=Q(status="rejected") | Q(hold__isnull=False) | Q(cost_pico=0),
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
        return sum(getattr(self, c) for c in PROMPT_COLUMNS)

    @property
    def completion_tokens(self) -> int:
        return sum(getattr(self, c) for c in COMPLETION_COLUMNS)

    @property
    def cost_micro(self) -> int:
        """The cost rounded to the micro-USD, for showing it."""
        return pico_to_micro(self.cost_pico)


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
    cache_write_1h_tokens = models.BigIntegerField(default=0, db_default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    audio_input_tokens = models.BigIntegerField(default=0, db_default=0)
    audio_output_tokens = models.BigIntegerField(default=0, db_default=0)
    image_input_tokens = models.BigIntegerField(default=0, db_default=0)
    image_output_tokens = models.BigIntegerField(default=0, db_default=0)
    images = models.BigIntegerField(default=0, db_default=0)
    audio_ms = models.BigIntegerField(default=0, db_default=0)
    characters = models.BigIntegerField(default=0, db_default=0)
    search_units = models.BigIntegerField(default=0, db_default=0)
    tool_calls = models.BigIntegerField(default=0, db_default=0)
    # Exact pico-USD, as on the records.
    cost_pico = models.BigIntegerField(default=0)
    upstream_cost_pico = models.BigIntegerField(default=0)

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
