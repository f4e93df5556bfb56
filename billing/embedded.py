"""The embedded mode has no Celery beat: its web process runs the safety-net tasks
(settle what no message carries, expire stale holds) in a background thread."""

import logging
import threading
import time

from django.db import close_old_connections

logger = logging.getLogger("tollgate.billing")


def start_sweeper(*, interval: float = 30.0) -> threading.Thread:
    from .tasks import holds_expire, usage_settle_pending

    def loop() -> None:
        while True:
            time.sleep(interval)
            try:
                close_old_connections()
                usage_settle_pending()
                holds_expire()
            except Exception:
                logger.exception("embedded sweeper run failed")

    thread = threading.Thread(target=loop, name="tollgate-sweeper", daemon=True)
    thread.start()
    return thread
