"""Building blocks for ledger tests: real services, no shortcuts around the money paths."""

from contextlib import contextmanager
from datetime import datetime

from django.db import connection

from billing.models import Carry
from billing.services import hold_reserve, settlement_run
from core.money import PICO_PER_MICRO
from usage.models import UsageRecord


def finished_request(
    *,
    key,
    cost: int = 0,
    hold: int = 1_000,
    upstream_cost: int = 0,
    cost_pico: int | None = None,
    upstream_cost_pico: int | None = None,
    model="m",
    channel=None,
    request_id="r",
):
    """Reserve a hold and record a finished request against it (not yet settled).
    ``cost`` and ``upstream_cost`` in micro-USD, or exactly in pico-USD."""
    hold_id = hold_reserve(
        api_key_id=key.id, account_id=key.account_id, amount=hold, request_id=request_id
    )
    if cost_pico is None:
        cost_pico = cost * PICO_PER_MICRO
    return UsageRecord.objects.create(
        request_id=request_id,
        account_id=key.account_id,
        api_key=key,
        hold_id=hold_id,
        model_requested=model,
        model_served=model,
        channel=channel,
        status="success" if cost_pico else "upstream_error",
        http_status=200 if cost_pico else 502,
        output_tokens=cost_pico // PICO_PER_MICRO,
        cost_pico=cost_pico,
        upstream_cost_pico=(
            upstream_cost * PICO_PER_MICRO if upstream_cost_pico is None else upstream_cost_pico
        ),
    )


def served(*, key, cost: int = 0, **kw) -> UsageRecord:
    record = finished_request(key=key, cost=cost, **kw)
    assert settlement_run(usage_ids=[record.pk]) == 1
    record.refresh_from_db()
    return record


def charged_for(account) -> int:
    """Micro-USD the account was charged for its settled usage: the exact cost of its
    records less the part below one micro-USD it carries to its next settlement."""
    exact = sum(
        UsageRecord.objects.filter(account=account, settled_at__isnull=False).values_list(
            "cost_pico", flat=True
        )
    )
    carry = Carry.objects.filter(account=account).values_list("pico", flat=True).first() or 0
    charged, rest = divmod(exact - carry, PICO_PER_MICRO)
    assert rest == 0 and 0 <= carry < PICO_PER_MICRO
    return charged


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
