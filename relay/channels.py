"""Channels changed by people (the admin, the API) and by the relay (a channel whose
upstream refuses its credentials is taken out of service)."""

import logging
from typing import Any

from django.utils import timezone

from core.transactions import enqueue_after_commit

from . import health
from .models import Channel
from .selectors import channel_cache_invalidate

logger = logging.getLogger("tollgate.relay")


def channel_disable(*, channel_id: int, reason: str) -> bool:
    """Take a channel out of service and tell the staff. True if it was enabled."""
    from .tasks import channel_alert  # the tasks import this module

    changed = Channel.objects.filter(pk=channel_id, status=Channel.Status.ENABLED).update(
        status=Channel.Status.DISABLED,
        disabled_reason=reason[:300],
        last_error=reason[:300],
        last_error_at=timezone.now(),
    )
    channel_cache_invalidate()
    if changed:
        logger.error("channel %s disabled: %s", channel_id, reason)
        enqueue_after_commit(channel_alert, channel_id, reason)
    return bool(changed)


def channel_create(*, values: dict[str, Any]) -> Channel:
    """A new channel; ``api_key`` (the upstream key) is encrypted before it is stored."""
    values = dict(values)
    api_key = values.pop("api_key", "")
    channel = Channel(**values)
    channel.api_key = api_key
    channel.save()
    channel_cache_invalidate()
    return channel


def channel_update(*, channel: Channel, values: dict[str, Any]) -> Channel:
    """Save the given fields only (the relay keeps the health columns up to date
    meanwhile). Turning a disabled channel back on also ends its cool-down."""
    values = dict(values)
    changed = set(values)
    if "api_key" in values:
        channel.api_key = values.pop("api_key")
        changed = (changed - {"api_key"}) | {"api_key_encrypted"}
    reenabled = (
        values.get("status") == Channel.Status.ENABLED and channel.status != Channel.Status.ENABLED
    )
    for name, value in values.items():
        setattr(channel, name, value)
    if reenabled or values.get("status") == Channel.Status.ENABLED:
        health.channel_recovered(channel.pk)
        channel.cooling_until = None
        changed.add("cooling_until")
        if reenabled and "disabled_reason" not in values:
            channel.disabled_reason = ""
            changed.add("disabled_reason")
    channel.save(update_fields=[*sorted(changed), "updated_at"])
    channel_cache_invalidate()
    return channel
