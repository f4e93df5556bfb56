"""A settlement and a reservation on a key with spend limits take their rows in one
order (the account, then the key's spend rows), so neither can end up waiting for a
row the other holds while holding one it wants."""

import threading
import time

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from billing.reconcile import ledger_check
from billing.services import settlement_run
from tests.support.factories import AccountFactory, ApiKeyFactory
from tests.support.ledger import finished_request

pytestmark = pytest.mark.django_db(transaction=True)


def _db_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _waiting_on_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return bool(row) and row[0] == "Lock"


def test_a_settlement_never_deadlocks_with_a_reservation_on_a_spend_limited_key():
    key = ApiKeyFactory(account=AccountFactory(credit=1_000_000), daily_spend_limit=500_000)
    record = finished_request(key=key, cost=300, hold=1_000)

    # A reservation caught half-way: it holds the account row and is about to update
    # its key's spend row (what tollgate_hold_reserve does, in this order).
    with psycopg.connect(_db_url()) as reservation:
        reservation.execute(
            "UPDATE accounts_account SET held = held WHERE id = %s", [key.account_id]
        )

        outcome: dict = {}
        started = threading.Event()

        def settle():
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    outcome["pid"] = cursor.fetchone()[0]
                started.set()
                outcome["settled"] = settlement_run(usage_ids=[record.pk])
            except Exception as exc:  # what the assertion below reports
                outcome["error"] = exc
            finally:
                started.set()
                connection.close()

        worker = threading.Thread(target=settle)
        worker.start()
        started.wait(10)
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock(outcome["pid"]):
            assert time.monotonic() < deadline, outcome
            time.sleep(0.02)

        # The settlement waits for the account row. Had it taken the key's spend row
        # first, this would now wait for it in turn, and PostgreSQL would kill one of
        # the two as a deadlock.
        reservation.execute(
            "UPDATE billing_keyspend SET held = held WHERE api_key_id = %s", [key.id]
        )
        reservation.commit()
        worker.join(15)

    assert "error" not in outcome, outcome.get("error")
    assert outcome["settled"] == 1
    record.refresh_from_db()
    assert record.settled_at is not None
    assert ledger_check() == []
