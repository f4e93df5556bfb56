from django.db import models
from django.db.models import Q

from . import crypto


def channel_types() -> list[tuple[str, str]]:
    """The channel types: one per registered provider (``relay.providers``), so a new
    provider needs no migration."""
    from .providers import channel_types

    return channel_types()


class Channel(models.Model):
    """One upstream endpoint that serves a list of models."""

    class Status(models.TextChoices):
        ENABLED = "enabled", "Enabled"
        DISABLED = "disabled", "Disabled"

    name = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=16, choices=channel_types, default="openai")
    base_url = models.URLField(max_length=500, blank=True)
    api_key_encrypted = models.TextField(blank=True, editable=False)
    # Public model names this channel serves.
    served_models = models.JSONField(default=list)
    # Public name -> name sent upstream, for the models that differ.
    model_mapping = models.JSONField(default=dict, blank=True)
    priority = models.IntegerField(default=0)
    weight = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENABLED)
    # Seconds to wait for the upstream's answer (or, streaming, for each chunk).
    request_timeout = models.FloatField(null=True, blank=True)
    # The upstream serves OpenAI's Responses API itself (``{base_url}/responses``) and
    # keeps the responses it makes: /v1/responses is passed through and the stored
    # responses' routes are forwarded to it. Off, /v1/responses is translated to chat
    # completions and Tollgate keeps the stored responses. OpenAI-compatible channels
    # only (``relay.providers.passes_responses_through``).
    responses_api = models.BooleanField(
        default=False,
        verbose_name="Speaks the Responses API",
        help_text="The upstream serves POST {base_url}/responses and keeps stored responses "
        "(OpenAI, Azure OpenAI). Off: /v1/responses is translated to chat completions. "
        "OpenAI-compatible channels only.",
    )
    # Health, kept by the relay: after repeated failures a channel cools down and is
    # probed back; an upstream that refuses our credentials is disabled.
    cooling_until = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.CharField(max_length=300, blank=True, editable=False)
    last_error_at = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.CharField(max_length=300, blank=True)
    # What the upstream charges us, USD per 1M tokens:
    # {"model": {"input": "0.15", "output": "0.60", "cache_read": ..., ...}}
    cost_prices = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(weight__gte=1), name="channel_weight_positive"),
            models.CheckConstraint(
                condition=Q(request_timeout__isnull=True) | Q(request_timeout__gt=0),
                name="channel_timeout_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def api_key(self) -> str:
        return crypto.decrypt(self.api_key_encrypted)

    @api_key.setter
    def api_key(self, value: str) -> None:
        self.api_key_encrypted = crypto.encrypt(value)

    def upstream_model(self, model: str) -> str:
        return self.model_mapping.get(model, model)

    @property
    def health(self) -> str:
        if self.status == self.Status.DISABLED:
            return "disabled"
        return "cooling down" if self.cooling_until is not None else "healthy"


class StoredResponse(models.Model):
    """A response made through ``/v1/responses`` that its account may come back to:
    ``GET``/``DELETE /v1/responses/{id}``, its input items, and ``previous_response_id``.

    Either its channel's upstream keeps it (``upstream``: the channel speaks the
    Responses API; this row only says whose it is and where it lives, so that nobody
    else reaches it), or Tollgate keeps it (served through translation, or by the
    built-in mock): ``items`` are the input items its request gave, ``previous`` the
    response it continued, and ``response`` the response as it was answered. A
    conversation is its chain of rows, each holding only its own turn: kept whole in
    every row, a long conversation would grow with the square of its length.

    Kept ``TOLLGATE["STORED_RESPONSE_DAYS"]`` days (OpenAI keeps them 30).
    """

    response_id = models.CharField(max_length=200, unique=True)
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    channel = models.ForeignKey(Channel, null=True, on_delete=models.SET_NULL, related_name="+")
    upstream = models.BooleanField(default=False)
    previous = models.CharField(max_length=200, blank=True)
    items = models.JSONField(default=list, blank=True)
    response = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="storedresponse_by_age")]

    def __str__(self) -> str:
        return self.response_id
