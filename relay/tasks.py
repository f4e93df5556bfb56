import logging
from datetime import UTC, datetime

from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.utils import timezone

from . import health
from .channels import channel_disable
from .models import Channel
from .providers import provider_for
from .stored_responses import stored_responses_expire

logger = logging.getLogger("tollgate.relay")


@shared_task
def channel_health_changed(channel_id: int, cooling_until_ms: float | None, error: str) -> None:
    """Show a channel's cool-down (or its recovery) in the admin."""
    if cooling_until_ms is None:
        Channel.objects.filter(pk=channel_id).update(cooling_until=None)
        return
    Channel.objects.filter(pk=channel_id).update(
        cooling_until=datetime.fromtimestamp(cooling_until_ms / 1000, tz=UTC),
        last_error=error[:300],
        last_error_at=timezone.now(),
    )


@shared_task
def channel_alert(channel_id: int, reason: str) -> None:
    """Email the staff that a channel was taken out of service."""
    channel = Channel.objects.filter(pk=channel_id).first()
    if channel is None:
        return
    recipients = list(
        get_user_model()
        .objects.filter(is_staff=True, is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
    )
    if not recipients:
        return
    send_mail(
        subject=f"[Tollgate] channel {channel.name} disabled",
        message=(
            f"The channel {channel.name} (#{channel.pk}) was disabled: {reason}\n\n"
            "Check its upstream key, then enable it again in the admin."
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=recipients,
    )


def probe(channel: Channel) -> int | None:
    """Ask the channel's upstream whether it is back: the HTTP status of a cheap
    request (None: unreachable)."""
    return provider_for(channel.type).probe(channel.base_url.rstrip("/"), channel.api_key)


@shared_task
def channels_probe() -> int:
    """Probe every channel whose cool-down is over: bring it back, or cool it down longer."""
    now_ms = datetime.now(UTC).timestamp() * 1000
    due = [cid for cid, (until, _) in health.cooling().items() if until <= now_ms]
    for channel in Channel.objects.filter(pk__in=due, status=Channel.Status.ENABLED):
        status = probe(channel)
        if status is not None and status < 400:
            health.channel_recovered(channel.pk)
            channel_health_changed(channel.pk, None, "")
        elif status in (401, 403):
            channel_disable(
                channel_id=channel.pk,
                reason=f"The upstream refused the channel's credentials (HTTP {status}).",
            )
        else:
            until = health.channel_failed(channel.pk)
            if until is not None:
                channel_health_changed(
                    channel.pk, until, f"probe failed ({status or 'unreachable'})"
                )
    return len(due)


@shared_task
def responses_expire() -> int:
    """Delete the stored responses past their retention."""
    expired = stored_responses_expire(days=settings.TOLLGATE["STORED_RESPONSE_DAYS"])
    if expired:
        logger.info("deleted %s stored responses past their retention", expired)
    return expired
