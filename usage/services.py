from typing import Any

from django.db import transaction
from django.utils import timezone

from .models import UsageRecord


def _enqueue_settlement(usage_id: int) -> None:
    from billing.tasks import usage_settle

    usage_settle.delay(usage_id)


def usage_record_finish(**fields: Any) -> UsageRecord:
    """Write the record of a request that reached the hold, and queue its settlement
    once the row is committed."""
    record = UsageRecord.objects.create(**fields)
    transaction.on_commit(lambda: _enqueue_settlement(record.pk))
    return record


def usage_record_reject(**fields: Any) -> UsageRecord:
    """Write the record of a request refused before any money moved: nothing to settle."""
    return UsageRecord.objects.create(
        status=UsageRecord.Status.REJECTED, settled_at=timezone.now(), **fields
    )
