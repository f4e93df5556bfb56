"""Settlement survives a worker killed mid-task and a broker that lost its messages."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis
from django.conf import settings
from django.db import connection

from billing.models import Hold, Transaction
from billing.reconcile import ledger_check
from billing.tasks import usage_settle, usage_settle_pending
from tests.support.factories import AccountFactory, ApiKeyFactory, PriceGroupFactory
from tests.support.ledger import finished_request
from tests.support.waiting import wait_for
from usage.models import UsageRecord

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "crashtest"


def _db_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _start_worker() -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": _db_url(),
        "REDIS_URL": settings.REDIS_URL,
        "DEBUG": "false",
        # Deliver a dead worker's task again after 3 s, checking every second.
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "CELERY_UNACKED_RESTORE_INTERVAL": "1",
        "CELERY_UNACKED_RESTORE_THROTTLE": "1",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            QUEUE,
            "--pool=solo",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )


def _waiting_on_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query ILIKE '%%accounts_account%%'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_worker_killed_during_settlement_is_redelivered_and_charges_once():
    account = AccountFactory(price_group=PriceGroupFactory(), credit=1_000_000)
    key = ApiKeyFactory(account=account)
    record = finished_request(key=key, cost=4_321, hold=10_000, request_id="crash")

    # Hold the account row so the worker stops at the end of the settlement: records,
    # hold, ledger rows and roll-ups written, only the balance and the commit to go.
    blocker = psycopg.connect(_db_url().replace("postgres://", "postgresql://"))
    blocker.execute("SELECT 1 FROM accounts_account WHERE id = %s FOR UPDATE", [account.id])
    worker = _start_worker()
    try:
        usage_settle.apply_async(args=[record.pk], queue=QUEUE)
        wait_for(_waiting_on_lock, timeout=30)
    finally:
        # Killed in the middle of the task (or, if the test failed earlier, anyway).
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        blocker.rollback()
        blocker.close()

    time.sleep(0.5)
    record.refresh_from_db()
    assert record.settled_at is None  # the dead worker's transaction never committed
    assert redis.Redis.from_url(settings.REDIS_URL).hlen("unacked") == 1  # and was not acknowledged

    restarted = _start_worker()
    try:
        wait_for(
            lambda: UsageRecord.objects.filter(pk=record.pk, settled_at__isnull=False).exists(),
            timeout=45,
        )
    finally:
        restarted.terminate()
        restarted.wait(15)

    account.refresh_from_db()
    assert (account.balance, account.held) == (1_000_000 - 4_321, 0)
    assert Transaction.objects.filter(kind="charge", account=account).count() == 1
    assert Hold.objects.get(pk=record.hold_id).status == "settled"
    assert ledger_check() == []


@pytest.mark.django_db(transaction=True)
def test_messages_lost_by_a_restarted_broker_are_settled_by_the_sweeper():
    account = AccountFactory(price_group=PriceGroupFactory(), credit=1_000_000)
    key = ApiKeyFactory(account=account)
    records = [finished_request(key=key, cost=100 + i, request_id=f"lost-{i}") for i in range(5)]
    for record in records:
        usage_settle.apply_async(args=[record.pk], queue="nobody-listens")
    redis.Redis.from_url(settings.REDIS_URL).flushdb()  # what a broker without persistence loses

    assert usage_settle_pending() == 5
    assert usage_settle_pending() == 0
    account.refresh_from_db()
    assert (account.balance, account.held) == (1_000_000 - sum(100 + i for i in range(5)), 0)
    assert ledger_check() == []
