"""Side effects of a write happen after its commit."""

from typing import Any

from django.db import transaction


def enqueue_after_commit(task: Any, *args: Any, **kwargs: Any) -> None:
    """Queue the Celery ``task`` once the transaction this runs in has committed (at
    once outside one): a worker must never see a message for a row it cannot read
    yet, nor one for a write that was rolled back."""
    transaction.on_commit(lambda: task.delay(*args, **kwargs))
