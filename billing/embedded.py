"""The embedded mode has no Celery beat: its web process runs the safety-net tasks
(settle what no message carries, expire stale holds) in a background thread."""

import logging
import threading
import time
from collections.abc import Callable, Sequence

from django.db import close_old_connections

logger = logging.getLogger("tollgate.billing")


def start_sweeper(
    *, interval: float = 30.0, also: Sequence[Callable[[], object]] = ()
) -> threading.Thread:
    """``also``: the upper layers' own sweeps (stored responses past their retention)."""
    from .tasks import holds_expire, usage_settle_pending

    def loop() -> None:
        while True:
            time.sleep(interval)
            try:
                close_old_connections()
                usage_settle_pending()
                holds_expire()
                for sweep in also:
                    sweep()
            except Exception:
                logger.exception("embedded sweeper run failed")

    thread = threading.Thread(target=loop, name="tollgate-sweeper", daemon=True)
    thread.start()
    return thread
