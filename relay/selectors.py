from dataclasses import dataclass, field

from django.conf import settings

from billing.pricing import Price, PriceError, price_spec_components
from core.localcache import TTLCache

from .models import Channel


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A channel as the relay sees it: cached per process, key decrypted."""

    id: int
    name: str
    type: str
    base_url: str
    api_key: str = field(repr=False)
    models: frozenset[str]
    model_mapping: dict[str, str]
    priority: int
    weight: int
    cost_prices: dict[str, Price]
    request_timeout: float | None = None
    # The upstream speaks the Responses API and keeps its responses (``Channel``).
    responses_api: bool = False

    def upstream_model(self, model: str) -> str:
        return self.model_mapping.get(model, model)


_channel_cache: TTLCache[list[ChannelInfo]] = TTLCache(
    "channels", lambda: settings.TOLLGATE["CHANNEL_CACHE_TTL"]
)


def _cost_prices(raw: dict) -> dict[str, Price]:
    """The channel's cost prices, components as in a price version (or the flat
    per-token shorthand); a model whose price cannot be read has none."""
    prices = {}
    for model, spec in (raw or {}).items():
        try:
            prices[model] = Price.of(model=model, components=price_spec_components(spec))
        except (PriceError, ArithmeticError, TypeError, ValueError):
            continue
        if not prices[model].components:
            del prices[model]
    return prices


def channel_models_without_cost(channel: Channel) -> list[str]:
    """The models ``channel`` serves with no usable cost price. Their upstream cost is
    booked as zero, so the margin on them is overstated. An upstream that charges
    nothing (the built-in mock) never lacks a price."""
    from .providers import provider_for  # the providers read channels through here

    if not provider_for(channel.type).charges:
        return []
    prices = channel.cost_prices if isinstance(channel.cost_prices, dict) else {}
    missing = []
    for model in channel.served_models or ():
        try:
            priced = _cost_prices({model: prices.get(model)})
        except (ValueError, ArithmeticError):
            priced = {}
        if model not in priced:
            missing.append(model)
    return missing


def _channels_load() -> list[ChannelInfo]:
    from .providers import passes_responses_through  # the providers read channels through here

    return [
        ChannelInfo(
            id=ch.pk,
            name=ch.name,
            type=ch.type,
            base_url=ch.base_url.rstrip("/"),
            api_key=ch.api_key,
            models=frozenset(ch.served_models or ()),
            model_mapping=dict(ch.model_mapping or {}),
            priority=ch.priority,
            weight=ch.weight,
            cost_prices=_cost_prices(ch.cost_prices),
            request_timeout=ch.request_timeout,
            responses_api=ch.responses_api and passes_responses_through(ch.type),
        )
        for ch in Channel.objects.filter(status=Channel.Status.ENABLED).order_by("-priority", "pk")
    ]


def channels_enabled() -> list[ChannelInfo]:
    return _channel_cache.get_or_load("enabled", _channels_load)


def channels_cached() -> list[ChannelInfo] | None:
    """The enabled channels if this process has them cached (no loading)."""
    return _channel_cache.peek("enabled")


def channel_cache_invalidate() -> None:
    """The channels changed: every process reloads them (see ``core.localcache``)."""
    _channel_cache.changed()
