"""Building blocks for ledger tests: real services, no shortcuts around the money paths."""

from contextlib import contextmanager
from datetime import datetime

from django.db import connection

from billing.services import hold_reserve, settlement_run
from usage.models import UsageRecord


def finished_request(
    *,
    key,
    cost: int,
    hold: int = 1_000,
    upstream_cost: int = 0,
    model="m",
    channel=None,
    request_id="r",
):
    """Reserve a hold and record a finished request against it (not yet settled)."""
    hold_id = hold_reserve(
        api_key_id=key.id, account_id=key.account_id, amount=hold, request_id=request_id
    )
    return UsageRecord.objects.create(
        request_id=request_id,
        account_id=key.account_id,
        api_key=key,
        hold_id=hold_id,
        model_requested=model,
        model_served=model,
        channel=channel,
        status="success" if cost else "upstream_error",
        http_status=200 if cost else 502,
        output_tokens=cost,
        cost=cost,
        upstream_cost=upstream_cost,
    )


def served(*, key, cost: int, **kw) -> UsageRecord:
    record = finished_request(key=key, cost=cost, **kw)
    assert settlement_run(usage_ids=[record.pk]) == 1
    record.refresh_from_db()
    return record


def backdate(txn_ids, when: datetime) -> None:
    """Move postings to an earlier moment (history for the test; the immutability
    guard is lifted for the moment). Inside a test's transaction the checks deferred
    to commit are run first: PostgreSQL alters no table with trigger events pending."""
    in_atomic = connection.in_atomic_block
    with connection.cursor() as cursor:
        if in_atomic:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE billing_transaction DISABLE TRIGGER transaction_immutable")
        try:
            cursor.execute(
                "UPDATE billing_transaction SET created_at = %s WHERE id = ANY(%s)",
                [when, list(txn_ids)],
            )
        finally:
            cursor.execute("ALTER TABLE billing_transaction ENABLE TRIGGER transaction_immutable")
            if in_atomic:
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")


@contextmanager
def balance_check_off():
    """Let an unbalanced entry be committed, to inject that corruption on purpose.
    Only for transactional tests: the trigger is switched off for everyone meanwhile."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE billing_entry DISABLE TRIGGER entries_balanced")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE billing_entry ENABLE TRIGGER entries_balanced")
