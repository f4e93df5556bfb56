from celery import shared_task

from . import services


@shared_task(acks_late=True, reject_on_worker_lost=True)
def usage_settle(usage_id: int) -> int:
    """Settle one usage record. Safe to deliver more than once: settled records are skipped."""
    return services.settlement_run(usage_ids=[usage_id])


@shared_task(acks_late=True, reject_on_worker_lost=True)
def usage_settle_pending(limit: int = 500) -> int:
    """Settle everything finished and not yet settled, a batch at a time."""
    total = 0
    while settled := services.settlement_run(limit=limit):
        total += settled
    return total
