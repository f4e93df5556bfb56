"""The reconciler catches every kind of corruption, reports it, and fixes nothing."""

from datetime import timedelta

import pytest
from django.core import mail
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone

from accounts.models import Account
from billing.models import Carry, Entry, Hold, KeySpend, LedgerAccount, Transaction
from billing.reconcile import ledger_check
from billing.services import hold_reserve
from billing.tasks import ledger_reconcile
from tests.support.factories import AccountFactory, ApiKeyFactory, PriceGroupFactory, UserFactory
from tests.support.ledger import balance_check_off, finished_request, served
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def books():
    """A small, healthy ledger: top-ups, settled usage (with upstream cost), a spend-
    limited key with an open hold."""
    account = AccountFactory(price_group=PriceGroupFactory(), credit=1_000_000)
    key = ApiKeyFactory(account=account, daily_spend_limit=900_000)
    served(key=key, cost=1_200, upstream_cost=700, request_id="a")
    served(key=key, cost=0, request_id="b")
    hold_reserve(api_key_id=key.id, account_id=account.id, amount=5_000, request_id="open")
    return account, key


def checks(breaches):
    return sorted({b.check for b in breaches})


def test_healthy_books_reconcile(books, capsys):
    assert ledger_check() == []
    call_command("ledger_check")
    assert "Ledger reconciles" in capsys.readouterr().out


CORRUPTIONS = {
    "transaction_without_entries": lambda account, key: Transaction.objects.create(
        kind="adjustment", idempotency_key="empty"
    ),
    "balance_mismatch": lambda account, key: Account.objects.filter(pk=account.pk).update(
        balance=F("balance") + 1
    ),
    "held_mismatch": lambda account, key: Account.objects.filter(pk=account.pk).update(
        held=F("held") - 1
    ),
    "key_spend_held_mismatch": lambda account, key: KeySpend.objects.filter(
        api_key=key, period="day"
    ).update(held=F("held") + 7),
    "usage_unsettled": lambda account, key: UsageRecord.objects.filter(
        pk=finished_request(key=key, cost=10, request_id="lost").pk
    ).update(created_at=timezone.now() - timedelta(hours=1)),
    "usage_charged_without_settlement": lambda account, key: UsageRecord.objects.filter(
        request_id="a"
    ).update(settlement=None),
    # Within a settlement, what is carried in and out is under one micro-USD.
    "settlement_mismatch": lambda account, key: UsageRecord.objects.filter(request_id="a").update(
        cost_pico=F("cost_pico") + 1_000_000
    ),
    "charged_not_exact": lambda account, key: Carry.objects.filter(account=account).update(
        pico=F("pico") + 1
    ),
    "settled_with_open_hold": lambda account, key: UsageRecord.objects.filter(
        request_id="b"
    ).update(hold=Hold.objects.get(request_id="open")),
}


@pytest.mark.parametrize("breach", sorted(CORRUPTIONS))
def test_each_kind_of_corruption_is_caught_and_left_as_is(books, breach, capsys):
    account, key = books
    CORRUPTIONS[breach](account, key)
    snapshot = (
        list(Entry.objects.values_list("pk", "amount")),
        list(Account.objects.values_list("pk", "balance", "held")),
    )

    found = ledger_check()

    assert breach in checks(found), found
    with pytest.raises(SystemExit) as exited:
        call_command("ledger_check")
    assert exited.value.code == 1
    assert breach in capsys.readouterr().err
    assert snapshot == (  # reported, not fixed
        list(Entry.objects.values_list("pk", "amount")),
        list(Account.objects.values_list("pk", "balance", "held")),
    )


@pytest.mark.django_db(transaction=True)
def test_an_unbalanced_transaction_is_reported_as_such(books, capsys):
    charge = Transaction.objects.filter(kind="charge").first()
    with balance_check_off():
        Entry.objects.create(
            transaction=charge, ledger_account=LedgerAccount.objects.get(code="revenue"), amount=5
        )
    found = ledger_check()
    assert {"transaction_unbalanced", "ledger_unbalanced", "settlement_mismatch"} <= set(
        checks(found)
    )
    assert f"transaction {charge.pk} sums to 5" in [b.detail for b in found]
    with pytest.raises(SystemExit):
        call_command("ledger_check")


def test_the_beat_task_tells_the_staff(books):
    UserFactory(is_staff=True, email="ops@example.com")
    assert ledger_reconcile() == 0
    assert mail.outbox == []
    account, _ = books
    Account.objects.filter(pk=account.pk).update(balance=F("balance") + 1)
    assert ledger_reconcile() == 1
    assert "1 breach" in mail.outbox[-1].subject
    assert f"account {account.pk}" in mail.outbox[-1].body


def test_a_hold_left_open_with_no_request_in_flight_is_reported(books):
    from core import inflight

    Hold.objects.filter(request_id="open").update(created_at=timezone.now() - timedelta(minutes=10))
    breaches = ledger_check()
    assert checks(breaches) == ["hold_left_open"]
    assert "(open, 5000 micro-USD) open for 6" in str(breaches[0])
    # A web process that has the request in flight vouches for its hold.
    hold = Hold.objects.get(request_id="open")
    inflight.backend().write("web-1:42", [hold.pk], 30)
    assert ledger_check() == []
