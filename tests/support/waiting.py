"""Polling until something another thread or process does has happened."""

import time


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Call ``predicate`` until it returns something truthy, and return that; fail the
    test if it has not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
