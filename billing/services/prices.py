"""Price versions."""

import logging
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from billing.models import (
    ModelPrice,
)

logger = logging.getLogger("tollgate.billing")


def model_price_set(
    *,
    group_id: int,
    model: str,
    input_per_m: Decimal,
    output_per_m: Decimal,
    cache_read_per_m: Decimal | None = None,
    cache_write_per_m: Decimal | None = None,
    reasoning_per_m: Decimal | None = None,
    request_fee: Decimal = Decimal(0),
    effective_from: datetime | None = None,
    mode: str = ModelPrice.Mode.CHAT,
) -> ModelPrice:
    """Publish a new price version. Requests already made keep the price they had;
    a version dated in the future applies from that moment."""
    price = ModelPrice.objects.create(
        group_id=group_id,
        model=model,
        input_per_m=input_per_m,
        output_per_m=output_per_m,
        cache_read_per_m=cache_read_per_m,
        cache_write_per_m=cache_write_per_m,
        reasoning_per_m=reasoning_per_m,
        request_fee=request_fee,
        effective_from=effective_from or timezone.now(),
        mode=mode,
    )
    from billing.selectors import price_cache_invalidate

    price_cache_invalidate(group_id=group_id)
    return price
