from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from .pricing import UNIT_CHOICES, UNITS, decimal_text


class PriceGroup(models.Model):
    """A price list. Every account is billed with its group's prices, times the
    group's multiplier."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    # Applies to every price of the group (1.25: everything a quarter dearer); a
    # request keeps the multiplier it was charged with in its price snapshot.
    multiplier = models.DecimalField(max_digits=8, decimal_places=4, default=Decimal(1))
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(multiplier__gte=0), name="pricegroup_multiplier_nonnegative"
            )
        ]

    def __str__(self) -> str:
        return self.name


class ModelPrice(models.Model):
    """One price version of one model in one group: a set of ``PriceComponent``s.

    Versioned: a change is a new version with a later ``effective_from``; a request
    is priced with the newest version already in effect and keeps a snapshot of the
    components it used. Versions are never edited."""

    class Mode(models.TextChoices):
        # The endpoint family a model serves (the names of LiteLLM's catalogue):
        # ``model: "auto"`` only chooses among models of the request's mode.
        CHAT = "chat", "Chat (chat completions, messages, responses)"
        COMPLETION = "completion", "Completions (legacy)"
        EMBEDDING = "embedding", "Embeddings"
        IMAGE_GENERATION = "image_generation", "Images"
        AUDIO_TRANSCRIPTION = "audio_transcription", "Audio transcription"
        AUDIO_SPEECH = "audio_speech", "Speech"
        RERANK = "rerank", "Rerank"
        MODERATION = "moderation", "Moderations"

    group = models.ForeignKey(PriceGroup, on_delete=models.CASCADE, related_name="prices")
    model = models.CharField(max_length=200)
    mode = models.CharField(max_length=32, choices=Mode.choices, default=Mode.CHAT)
    effective_from = models.DateTimeField(db_default=Now())
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["group", "model", "effective_from"], name="modelprice_one_version_at_a_time"
            ),
        ]
        indexes = [models.Index(fields=["group", "model", "-effective_from"])]

    def __str__(self) -> str:
        return f"{self.group} / {self.model} from {self.effective_from:%Y-%m-%d %H:%M}"


class PriceComponent(models.Model):
    """One "unit x rate" line of a price version (``billing.pricing``): USD per the
    unit's quantum, with optional conditions (a context tier above N prompt tokens,
    an image's size and quality, a tool's type, a service tier)."""

    price = models.ForeignKey(ModelPrice, on_delete=models.CASCADE, related_name="components")
    unit = models.CharField(max_length=32, choices=UNIT_CHOICES)
    # Exact to the pico-USD per counted quantity (a token, a millisecond of audio...):
    # ``billing.pricing.rate_pico`` refuses more decimals than the unit allows.
    rate = models.DecimalField(max_digits=24, decimal_places=12)
    above = models.PositiveIntegerField(
        default=0, help_text="Applies when the prompt is above this many tokens (0: always)."
    )
    size = models.CharField(max_length=32, blank=True)
    quality = models.CharField(max_length=32, blank=True)
    tool = models.CharField(max_length=64, blank=True)
    service_tier = models.CharField(max_length=32, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["price", "unit", "above", "size", "quality", "tool", "service_tier"],
                name="pricecomponent_unique_conditions",
            ),
            models.CheckConstraint(
                condition=Q(rate__gte=0), name="pricecomponent_rate_nonnegative"
            ),
            models.CheckConstraint(
                condition=Q(unit="image") | (Q(size="") & Q(quality="")),
                name="pricecomponent_size_only_for_images",
            ),
            models.CheckConstraint(
                condition=Q(unit="tool_call") | Q(tool=""),
                name="pricecomponent_tool_only_for_tool_calls",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.unit} at {decimal_text(self.rate)} per {UNITS[self.unit].per}"


class Carry(models.Model):
    """The part of an account's exact charges below one micro-USD, not yet charged:
    settlement charges whole micro-USD and carries the rest to the next batch
    (``billing.services.settlement``). ``upstream_pico``: the same for what its
    requests cost upstream, not yet booked as upstream cost."""

    account = models.OneToOneField(
        "accounts.Account", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    pico = models.BigIntegerField(default=0)
    # A database default too: a worker still on the previous release inserts rows
    # without it while a deploy rolls out.
    upstream_pico = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(pico__gte=0) & Q(pico__lt=1_000_000), name="carry_below_one_micro"
            ),
            models.CheckConstraint(
                condition=Q(upstream_pico__gte=0) & Q(upstream_pico__lt=1_000_000),
                name="upstream_carry_below_one_micro",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account_id}: {self.pico} pico-USD, upstream {self.upstream_pico}"


class LedgerAccount(models.Model):
    """A ledger account. Customer accounts mirror ``accounts.Account``; the others are
    the house side of every posting."""

    class Kind(models.TextChoices):
        CUSTOMER = "customer", "Customer balance"
        REVENUE = "revenue", "Revenue"
        TOPUP = "topup", "Top-up source"
        UPSTREAM_COST = "upstream_cost", "Upstream cost"
        UPSTREAM_PAYABLE = "upstream_payable", "Upstream payable"
        ADJUSTMENT = "adjustment", "Adjustments"
        OVERAGE = "overage", "Overage"
        REDEMPTION = "redemption", "Redemption codes"

    code = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    account = models.OneToOneField(
        "accounts.Account",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_account",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(kind="customer") & Q(account__isnull=False))
                | (~Q(kind="customer") & Q(account__isnull=True)),
                name="ledgeraccount_customer_has_account",
            )
        ]

    def __str__(self) -> str:
        return self.code


class Transaction(models.Model):
    """One balanced posting: its entries sum to zero. Never updated or deleted."""

    class Kind(models.TextChoices):
        TOPUP = "topup", "Top-up"
        CHARGE = "charge", "Usage charge"
        ADJUSTMENT = "adjustment", "Adjustment"
        REDEMPTION = "redemption", "Redemption"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    # Makes every posting idempotent: the same key can be posted once only.
    idempotency_key = models.CharField(max_length=200, unique=True)
    account = models.ForeignKey(
        "accounts.Account",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="transactions",
    )
    memo = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["account", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"


class Entry(models.Model):
    """A signed amount (micro-USD) on one ledger account. Positive raises the account's
    balance. ``model`` and ``channel`` break usage postings down for margin reports."""

    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, related_name="entries")
    ledger_account = models.ForeignKey(
        LedgerAccount, on_delete=models.PROTECT, related_name="entries"
    )
    amount = models.BigIntegerField()
    model = models.CharField(max_length=200, blank=True)
    channel = models.ForeignKey(
        "relay.Channel", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="entry_amount_nonzero"),
        ]
        indexes = [models.Index(fields=["ledger_account", "created_at"])]
        verbose_name_plural = "entries"

    def __str__(self) -> str:
        return f"{self.ledger_account_id}: {self.amount}"


class Hold(models.Model):
    """Money set aside for one request before it is forwarded upstream.

    Resolves exactly once: settled, released or expired."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        SETTLED = "settled", "Settled"
        RELEASED = "released", "Released"
        EXPIRED = "expired", "Expired"

    # Found through the (account, status) index below.
    account = models.ForeignKey(
        "accounts.Account", on_delete=models.PROTECT, related_name="holds", db_index=False
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    request_id = models.CharField(max_length=128)
    amount = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(db_default=Now())
    resolved_at = models.DateTimeField(null=True, blank=True)
    # Set when the key has a daily / monthly spend limit: the hold also counts in
    # that day's / month's ``KeySpend.held`` and is released from it once.
    spend_day = models.DateField(null=True, blank=True)
    spend_month = models.DateField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="hold_amount_positive"),
            models.CheckConstraint(
                condition=(Q(status="open") & Q(resolved_at__isnull=True))
                | (~Q(status="open") & Q(resolved_at__isnull=False)),
                name="hold_resolved_when_closed",
            ),
        ]
        indexes = [
            models.Index(
                fields=["created_at"], condition=Q(status="open"), name="hold_open_by_age"
            ),
            models.Index(fields=["account", "status"]),
        ]

    def __str__(self) -> str:
        return f"hold #{self.pk} {self.amount} {self.status}"


class KeySpend(models.Model):
    """What one key spent (settled charges) and has on hold, per UTC day and month.

    Spend limits are checked against ``spent + held`` in the same database statement
    that reserves a hold, so they hold under concurrency and without Redis."""

    class Period(models.TextChoices):
        DAY = "day", "Day"
        MONTH = "month", "Month"

    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.CASCADE, related_name="spend")
    period = models.CharField(max_length=8, choices=Period.choices)
    start = models.DateField()
    spent = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "period", "start"], name="keyspend_unique"),
            models.CheckConstraint(condition=Q(held__gte=0), name="keyspend_held_nonnegative"),
            models.CheckConstraint(condition=Q(spent__gte=0), name="keyspend_spent_nonnegative"),
        ]

    def __str__(self) -> str:
        return f"{self.api_key_id} {self.period} {self.start}: {self.spent}+{self.held}"


class RedemptionCode(models.Model):
    """A prepaid code a customer redeems for credit, once. Only its hash is stored."""

    code_hash = models.CharField(max_length=64, unique=True)
    last4 = models.CharField(max_length=4)
    amount = models.BigIntegerField()
    memo = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    redeemed_by = models.ForeignKey(
        "accounts.Account", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    redeemed_at = models.DateTimeField(null=True, blank=True)
    transaction = models.OneToOneField(
        Transaction, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="redemption_amount_positive"),
            models.CheckConstraint(
                condition=(
                    Q(redeemed_at__isnull=True)
                    & Q(redeemed_by__isnull=True)
                    & Q(transaction__isnull=True)
                )
                | (
                    Q(redeemed_at__isnull=False)
                    & Q(redeemed_by__isnull=False)
                    & Q(transaction__isnull=False)
                ),
                name="redemption_redeemed_together",
            ),
        ]

    def __str__(self) -> str:
        return f"…{self.last4} ({self.amount})"


class Statement(models.Model):
    """One account's month, computed from the ledger: opening + credits + charges =
    closing, with line items that add up to the credits and to the charges."""

    account = models.ForeignKey(
        "accounts.Account", on_delete=models.PROTECT, related_name="statements"
    )
    period_start = models.DateField()
    period_end = models.DateField()
    opening = models.BigIntegerField()
    credits = models.BigIntegerField()
    charges = models.BigIntegerField()
    closing = models.BigIntegerField()
    # [{"model", "requests", "input_tokens", ..., "amount"}], amounts negative
    charge_lines = models.JSONField(default=list)
    # [{"kind", "count", "amount"}], amounts positive
    credit_lines = models.JSONField(default=list)
    generated_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "period_start"], name="statement_one_per_month"
            ),
            models.CheckConstraint(
                condition=Q(closing=F("opening") + F("credits") + F("charges")),
                name="statement_reconciles",
            ),
            models.CheckConstraint(condition=Q(credits__gte=0), name="statement_credits_positive"),
            models.CheckConstraint(condition=Q(charges__lte=0), name="statement_charges_negative"),
        ]
        ordering = ["-period_start"]

    def __str__(self) -> str:
        return f"{self.account} {self.period_start:%Y-%m}"
