"""Requests cost exact pico-USD; accounts are charged whole micro-USD and carry the
rest. Whatever the sizes and however records fall into settlement batches, what an
account is charged is the exact sum of its records to within one micro-USD, and
nothing is free however small."""

import threading

import pytest
from django.db import connection
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.models import Carry, Entry
from billing.reconcile import ledger_check
from billing.services import settlement_run
from tests.support.factories import AccountFactory, ApiKeyFactory
from tests.support.ledger import finished_request

CREDIT = 10_000_000


def booked(account, kind: str) -> int:
    """Micro-USD booked to ``kind`` (revenue, upstream cost) on the account's charges."""
    return (
        Entry.objects.filter(ledger_account__kind=kind, transaction__account=account).aggregate(
            s=Sum("amount")
        )["s"]
        or 0
    )


def billed(account) -> int:
    """Micro-USD the account was billed for usage (revenue booked on its charges)."""
    return booked(account, "revenue")


def booked_upstream(account) -> int:
    return booked(account, "upstream_cost")


def carry(account, column: str) -> int:
    return Carry.objects.filter(account=account).values_list(column, flat=True).first() or 0


def carried(account) -> int:
    return carry(account, "pico")


def carried_upstream(account) -> int:
    return carry(account, "upstream_pico")


# Embeddings-sized requests: a few tokens at cents per 1M tokens cost a fraction of a
# micro-USD each; now and then a larger one.
tiny = st.one_of(
    st.integers(min_value=1, max_value=999_999),
    st.integers(min_value=1_000_000, max_value=5_000_000),
)


@pytest.mark.django_db
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    costs=st.lists(st.tuples(tiny, st.one_of(st.just(0), tiny)), min_size=1, max_size=40),
    cuts=st.lists(st.booleans(), max_size=40),
)
def test_many_tiny_requests_are_charged_their_exact_sum_in_any_batches(costs, cuts):
    account = AccountFactory(credit=CREDIT)
    key = ApiKeyFactory(account=account)
    records = [
        finished_request(key=key, cost_pico=c, upstream_cost_pico=up, hold=10, request_id=f"t{i}")
        for i, (c, up) in enumerate(costs)
    ]
    batch: list[int] = []
    exact = upstream = 0
    for i, record in enumerate(records):
        batch.append(record.pk)
        exact += costs[i][0]
        upstream += costs[i][1]
        if i == len(records) - 1 or (i < len(cuts) and cuts[i]):
            assert settlement_run(usage_ids=batch) == len(batch)
            batch = []
            # After every batch: charged up to the exact sum so far, less than one
            # micro-USD short of it, the rest carried.
            assert billed(account) * 1_000_000 + carried(account) == exact
            assert 0 <= exact - billed(account) * 1_000_000 < 1_000_000
            # What the requests cost upstream is booked the same way, so the margin
            # is exact too.
            assert booked_upstream(account) * 1_000_000 + carried_upstream(account) == upstream
    account.refresh_from_db()
    assert (account.balance, account.held) == (CREDIT - billed(account), 0)
    assert ledger_check() == []


@pytest.mark.django_db
def test_a_million_embeddings_calls_of_five_tokens_cost_ten_cents():
    """5 tokens at $0.02 per 1M tokens is a tenth of a micro-USD: ten of them are
    charged one micro-USD, not zero."""
    account = AccountFactory(credit=CREDIT)
    key = ApiKeyFactory(account=account)
    for i in range(25):
        record = finished_request(key=key, cost_pico=100_000, hold=1, request_id=f"e{i}")
        settlement_run(usage_ids=[record.pk])
    assert (billed(account), carried(account)) == (2, 500_000)
    account.refresh_from_db()
    assert account.balance == CREDIT - 2
    assert ledger_check() == []


@pytest.mark.django_db(transaction=True)
def test_workers_settling_one_account_at_once_carry_its_remainder_exactly():
    """Two workers settle the same account's records concurrently (each on its own
    database connection): the carry row serialises them, nothing is lost or doubled."""
    account = AccountFactory(credit=CREDIT)
    key = ApiKeyFactory(account=account)
    costs = [333_333 + 7 * i for i in range(120)]
    for i, c in enumerate(costs):
        finished_request(key=key, cost_pico=c, hold=1, request_id=f"c{i}")
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            while settlement_run(limit=7):
                pass
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert billed(account) * 1_000_000 + carried(account) == sum(costs)
    account.refresh_from_db()
    assert (account.balance, account.held) == (CREDIT - billed(account), 0)
    assert ledger_check() == []


@pytest.mark.django_db
def test_tiny_upstream_costs_settled_one_by_one_are_booked_not_lost():
    """An embeddings call costing 0.4 micro-USD upstream, settled alone, used to book
    nothing each time: the margin looked better than it was."""
    account = AccountFactory(credit=CREDIT)
    key = ApiKeyFactory(account=account)
    for i in range(10):
        record = finished_request(
            key=key, cost_pico=500_000, upstream_cost_pico=400_000, hold=1, request_id=f"u{i}"
        )
        settlement_run(usage_ids=[record.pk])
    assert (booked_upstream(account), carried_upstream(account)) == (4, 0)
    assert (billed(account), carried(account)) == (5, 0)
    assert ledger_check() == []
