"""Price versions: a set of components, published at once."""

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from billing.models import ModelPrice, PriceComponent, PriceGroup
from billing.pricing import Component, Price, PriceError

logger = logging.getLogger("tollgate.billing")

# What a component spec may name, beside its unit and rate.
CONDITIONS = ("above", "size", "quality", "tool", "service_tier")


def components_checked(
    specs: Iterable[Mapping[str, Any] | Component],
) -> list[Component]:
    """Component specs (``{"unit", "rate", "above", "size", ...}``) checked as one
    price: each exact, none twice, at least one. Raises PriceError."""
    built = []
    for spec in specs:
        if isinstance(spec, Component):
            built.append(spec)
            continue
        unknown = set(spec) - {"unit", "rate", *CONDITIONS}
        if unknown:
            raise PriceError(f"unknown field `{sorted(unknown)[0]}`", sorted(unknown)[0])
        if "unit" not in spec or "rate" not in spec:
            raise PriceError("a component needs a `unit` and a `rate`", "unit")
        built.append(Component.of(**dict(spec)))
    if not built:
        raise PriceError("a price needs at least one component", "components")
    Price(model="", components=tuple(built))  # refuses two alike
    return built


@transaction.atomic
def model_price_set(
    *,
    group_id: int,
    model: str,
    components: Iterable[Mapping[str, Any] | Component],
    effective_from: datetime | None = None,
    mode: str = ModelPrice.Mode.CHAT,
) -> ModelPrice:
    """Publish a new price version with its components. Requests already made keep
    the price they had; a version dated in the future applies from that moment.
    Raises PriceError for a component that cannot be priced exactly."""
    checked = components_checked(components)
    price = ModelPrice.objects.create(
        group_id=group_id,
        model=model,
        effective_from=effective_from or timezone.now(),
        mode=mode,
    )
    PriceComponent.objects.bulk_create(
        PriceComponent(
            price=price,
            unit=c.unit,
            rate=c.rate,
            above=c.above,
            size=c.size,
            quality=c.quality,
            tool=c.tool,
            service_tier=c.service_tier,
        )
        for c in checked
    )
    from billing.selectors import price_cache_invalidate

    price_cache_invalidate(group_id=group_id)
    return price


def price_group_multiplier_set(*, group: PriceGroup, multiplier: Decimal) -> PriceGroup:
    """Change what every price of the group is multiplied by, for later requests."""
    if multiplier < 0:
        raise PriceError("a multiplier is zero or more", "multiplier")
    group.multiplier = multiplier
    group.save(update_fields=["multiplier"])
    from billing.selectors import price_cache_invalidate

    price_cache_invalidate(group_id=group.pk)
    return group
