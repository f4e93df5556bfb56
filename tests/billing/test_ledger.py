import pytest
from django.db import IntegrityError, transaction

from billing.models import Entry, LedgerAccount, Transaction
from billing.services import LedgerError, account_credit, customer_entry, ledger_post, system_entry
from tests.support.factories import AccountFactory, PriceGroupFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def account():
    return AccountFactory(price_group=PriceGroupFactory())


def test_top_up_is_a_balanced_posting_that_moves_the_cached_balance(account, django_user_model):
    staff = django_user_model.objects.create_user("ops", password="x-pass-123")
    txn = account_credit(account=account, amount=2_500_000, memo="wire 42", created_by=staff)
    account.refresh_from_db()
    assert account.balance == 2_500_000
    rows = sorted(txn.entries.values_list("ledger_account__kind", "amount"))
    assert rows == [("customer", 2_500_000), ("topup", -2_500_000)]
    assert txn.created_by == staff


def test_credit_with_the_same_idempotency_key_posts_once(account):
    first = account_credit(account=account, amount=1_000, idempotency_key="invoice-7")
    second = account_credit(account=account, amount=1_000, idempotency_key="invoice-7")
    assert first.pk == second.pk
    account.refresh_from_db()
    assert account.balance == 1_000


def test_negative_adjustment_cannot_overdraw(account):
    account_credit(account=account, amount=500)
    with pytest.raises(LedgerError):
        account_credit(account=account, amount=-501, kind="adjustment", memo="refund reversal")
    account.refresh_from_db()
    assert account.balance == 500
    account_credit(account=account, amount=-500, kind="adjustment", memo="refund reversal")
    account.refresh_from_db()
    assert account.balance == 0


def test_unbalanced_or_empty_postings_are_refused(account):
    with transaction.atomic(), pytest.raises(LedgerError):
        ledger_post(kind="adjustment", idempotency_key="x", entries=[customer_entry(account.pk, 5)])
    with transaction.atomic(), pytest.raises(LedgerError):
        ledger_post(kind="adjustment", idempotency_key="y", entries=[])
    assert not Entry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_postings_outside_a_transaction_are_refused():
    account = AccountFactory(price_group=PriceGroupFactory())
    with pytest.raises(LedgerError):
        ledger_post(
            kind="adjustment",
            idempotency_key="z",
            entries=[customer_entry(account.pk, 5), system_entry("adjustment", -5)],
        )
    assert not Entry.objects.exists()


def test_top_up_must_be_positive(account):
    with pytest.raises(LedgerError):
        account_credit(account=account, amount=0)
    with pytest.raises(LedgerError):
        account_credit(account=account, amount=-5)


def test_database_refuses_zero_entries_and_duplicate_postings(account):
    txn = account_credit(account=account, amount=10, idempotency_key="k1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Entry.objects.create(
            transaction=txn, ledger_account=LedgerAccount.objects.get(code="topup"), amount=0
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        Transaction.objects.create(kind="topup", idempotency_key="k1")


def test_account_row_refuses_held_above_balance(account):
    from accounts.models import Account

    with pytest.raises(IntegrityError), transaction.atomic():
        Account.objects.filter(pk=account.pk).update(held=1)
