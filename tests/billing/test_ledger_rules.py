"""The ledger's rules, enforced by the database and the services."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.core import mail
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import Account
from billing.models import Entry, Hold, KeySpend, LedgerAccount, RedemptionCode, Transaction
from billing.reconcile import ledger_check
from billing.services import (
    HoldRefused,
    LedgerError,
    RedemptionError,
    account_adjust,
    customer_entry,
    hold_reserve,
    holds_expire,
    ledger_post,
    redemption_codes_create,
    redemption_redeem,
    settlement_run,
    system_entry,
)
from tests.support.factories import AccountFactory, ApiKeyFactory, PriceGroupFactory, UserFactory
from tests.support.ledger import finished_request, served
from tests.support.waiting import wait_for


@pytest.fixture
def key(db):
    return ApiKeyFactory(account=AccountFactory(price_group=PriceGroupFactory(), credit=100_000))


def test_posted_entries_and_transactions_cannot_be_changed_or_deleted(key):
    entry = Entry.objects.first()
    for sql in (
        "UPDATE billing_entry SET amount = 1 WHERE id = %s",
        "DELETE FROM billing_entry WHERE id = %s",
        "UPDATE billing_transaction SET memo = 'edited' WHERE id = %s",
        "DELETE FROM billing_transaction WHERE id = %s",
    ):
        target = entry.pk if "entry" in sql else entry.transaction_id
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, [target])
    assert Entry.objects.get(pk=entry.pk).amount == entry.amount


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_to_commit_an_unbalanced_transaction():
    account = AccountFactory(price_group=PriceGroupFactory())
    customer = LedgerAccount.objects.get(account=account)
    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        txn = Transaction.objects.create(kind="adjustment", idempotency_key="bad")
        Entry.objects.create(transaction=txn, ledger_account=customer, amount=5)
    assert not Transaction.objects.filter(idempotency_key="bad").exists()
    with transaction.atomic():  # balanced: fine
        ledger_post(
            kind="adjustment",
            idempotency_key="good",
            entries=[customer_entry(account.pk, 5), system_entry("adjustment", -5)],
        )
    account.refresh_from_db()
    assert account.balance == 5


def test_a_hold_resolves_exactly_once(key):
    record = served(key=key, cost=300)
    hold = Hold.objects.get(pk=record.hold_id)
    assert hold.status == "settled"
    with pytest.raises(IntegrityError, match="cannot change"), transaction.atomic():
        Hold.objects.filter(pk=hold.pk).update(status="released")
    assert settlement_run(usage_ids=[record.pk]) == 0  # settled records are skipped


def test_failed_requests_release_their_hold_and_charge_nothing(key):
    record = served(key=key, cost=0)
    assert Hold.objects.get(pk=record.hold_id).status == "released"
    key.account.refresh_from_db()
    assert (key.account.balance, key.account.held) == (100_000, 0)
    assert record.settlement is None


def test_expired_holds_are_released_once_and_a_late_settlement_is_a_direct_charge(key):
    limited = ApiKeyFactory(account=key.account, daily_spend_limit=50_000)
    record = finished_request(key=limited, cost=700, hold=2_000, request_id="late")
    hold_reserve(api_key_id=limited.id, account_id=key.account_id, amount=3_000, request_id="fresh")
    Hold.objects.filter(request_id="late").update(created_at=timezone.now() - timedelta(hours=2))

    assert holds_expire(ttl_seconds=3600) == 1
    assert holds_expire(ttl_seconds=3600) == 0
    account = key.account
    account.refresh_from_db()
    assert account.held == 3_000  # only the fresh hold is left
    assert Hold.objects.get(request_id="late").status == "expired"
    assert KeySpend.objects.get(api_key=limited, period="day").held == 3_000

    assert settlement_run(usage_ids=[record.pk]) == 1
    account.refresh_from_db()
    assert (account.balance, account.held) == (
        100_000 - 700,
        3_000,
    )  # charged, nothing released twice
    assert Hold.objects.get(request_id="late").status == "expired"
    assert KeySpend.objects.get(api_key=limited, period="day").spent == 700
    assert ledger_check() == []


@pytest.mark.django_db(transaction=True)
def test_sweeper_and_settlement_racing_for_one_hold_resolve_it_once():
    key = ApiKeyFactory(account=AccountFactory(price_group=PriceGroupFactory(), credit=100_000))
    records = [
        finished_request(key=key, cost=250, hold=1_000, request_id=f"race-{i}") for i in range(20)
    ]
    Hold.objects.update(created_at=timezone.now() - timedelta(hours=2))
    barrier = threading.Barrier(2)

    def sweep():
        barrier.wait()
        try:
            return holds_expire(ttl_seconds=3600, limit=3)
        finally:
            connection.close()

    def settle():
        barrier.wait()
        try:
            return sum(settlement_run(usage_ids=[r.pk]) for r in records)
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        sweeping, settling = pool.submit(sweep), pool.submit(settle)
        expired, settled = sweeping.result(), settling.result()
    statuses = list(Hold.objects.values_list("status", flat=True))
    assert statuses.count("expired") == expired and statuses.count("settled") == 20 - expired
    assert settled == 20
    key.account.refresh_from_db()
    assert (key.account.balance, key.account.held) == (100_000 - 20 * 250, 0)
    assert ledger_check() == []


@pytest.mark.django_db(transaction=True)
def test_a_request_costing_more_than_its_hold_is_capped_booked_as_overage_and_alerted(
    celery_worker_thread, django_user_model
):
    django_user_model.objects.create_user("ops", "ops@example.com", "pw-123456", is_staff=True)
    account = AccountFactory(price_group=PriceGroupFactory(), credit=10_000, overdraft_limit=500)
    small = ApiKeyFactory(account=account)
    record = served(key=small, cost=50_000, hold=2_000)
    account.refresh_from_db()
    assert (account.balance, account.held) == (-500, 0)  # hold + available + overdraft
    entries = dict(record.settlement.entries.values_list("ledger_account__kind", "amount"))
    assert entries == {"customer": -10_500, "revenue": 50_000, "overage": -39_500}
    alert = wait_for(lambda: mail.outbox[-1] if mail.outbox else None)
    assert "overage" in alert.subject and alert.to == ["ops@example.com"]
    with pytest.raises(HoldRefused) as refused:
        hold_reserve(api_key_id=small.id, account_id=account.id, amount=1, request_id="next")
    assert refused.value.reason == "insufficient_balance"
    assert ledger_check() == []


def test_adjustments_need_a_reason_and_a_member_of_staff(key):
    staff = UserFactory(is_staff=True)
    with pytest.raises(LedgerError):
        account_adjust(account=key.account, amount=-100, reason="  ", staff=staff)
    with pytest.raises(LedgerError):
        account_adjust(account=key.account, amount=-100, reason="refund", staff=UserFactory())
    txn = account_adjust(
        account=key.account, amount=-100, reason="refund of a duplicate", staff=staff
    )
    assert (txn.kind, txn.memo, txn.created_by) == ("adjustment", "refund of a duplicate", staff)
    key.account.refresh_from_db()
    assert key.account.balance == 99_900


def test_redemption_codes_are_single_use_and_checked(key):
    staff = UserFactory(is_staff=True)
    first, second = redemption_codes_create(
        amount=5_000_000, count=2, memo="promo", created_by=staff
    )
    assert first != second and first.startswith("TG-") and len(first) == 22
    assert first not in str(list(RedemptionCode.objects.values()))  # only hashes are stored

    txn = redemption_redeem(account=key.account, code=first.lower().replace("-", " "))
    assert txn.kind == "redemption"
    key.account.refresh_from_db()
    assert key.account.balance == 5_100_000
    with pytest.raises(RedemptionError, match="already been redeemed"):
        redemption_redeem(account=key.account, code=first)
    with pytest.raises(RedemptionError, match="not valid"):
        redemption_redeem(account=key.account, code="TG-0000-0000-0000-0000")
    RedemptionCode.objects.filter(last4=second[-4:]).update(expires_at=timezone.now())
    with pytest.raises(RedemptionError, match="expired"):
        redemption_redeem(account=key.account, code=second)
    assert ledger_check() == []


@pytest.mark.django_db(transaction=True)
def test_a_code_redeemed_from_many_connections_at_once_credits_once():
    accounts = [AccountFactory(price_group=PriceGroupFactory()) for _ in range(8)]
    (code,) = redemption_codes_create(amount=1_000_000)
    barrier = threading.Barrier(8)

    def redeem(account):
        barrier.wait()
        try:
            redemption_redeem(account=account, code=code)
            return True
        except RedemptionError:
            return False
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(redeem, accounts))
    assert results.count(True) == 1
    balances = sorted(
        Account.objects.filter(pk__in=[x.pk for x in accounts]).values_list("balance", flat=True)
    )
    assert balances == [0] * 7 + [1_000_000]
    assert Transaction.objects.filter(kind="redemption").count() == 1
