"""Holds and usage records written in groups: requests that reach the database
together share one statement and one commit, and each still gets its own answer."""

import asyncio

import pytest
from django.db import DataError, IntegrityError, connection

from accounts.models import Account
from billing.models import Hold, KeySpend
from billing.services import HoldRefused, hold_reserve_async
from billing.tasks import usage_settle_pending
from core import adb
from tests.support.factories import AccountFactory, ApiKeyFactory
from tests.support.relay import settle_in_flight
from usage.models import UsageRecord
from usage.services import usage_record_finish_async

pytestmark = pytest.mark.django_db(transaction=True)

AMOUNT = 1_000


@pytest.fixture(autouse=True)
def _settled_before_flush(celery_worker_thread):
    """The records written here are settled by the session's worker (the relay asks
    for that after writing a record; these tests write records themselves, so they
    ask), and it is done before the tables are emptied for the next test (a
    settlement running during the flush deadlocks with it)."""
    yield
    usage_settle_pending.delay()
    settle_in_flight()


def run(coroutine):
    """Run on a fresh event loop, closing that loop's database connections after."""

    async def main():
        try:
            return await coroutine
        finally:
            await adb.close()

    return asyncio.run(main())


def transactions_that_wrote(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(DISTINCT xmin::text) FROM {table}")  # noqa: S608
        return cursor.fetchone()[0]


async def reserve_all(keys, n_each: int, amount: int = AMOUNT) -> list[int | str]:
    async def one(key, i):
        try:
            return await hold_reserve_async(
                api_key_id=key.id,
                account_id=key.account_id,
                amount=amount,
                request_id=f"{key.id}-{i}",
            )
        except HoldRefused as refused:
            return refused.reason

    return await asyncio.gather(*(one(k, i) for i in range(n_each) for k in keys))


def test_holds_asked_for_together_admit_exactly_what_the_balance_covers():
    account = AccountFactory(credit=15 * AMOUNT + AMOUNT // 2)
    key = ApiKeyFactory(account=account)

    results = run(reserve_all([key], 40))

    granted = [r for r in results if isinstance(r, int)]
    assert len(granted) == 15
    assert set(results) - set(granted) == {HoldRefused.INSUFFICIENT_BALANCE}
    holds = Hold.objects.filter(account=account)
    # Each request got its own hold, under its own request id.
    assert sorted(holds.values_list("pk", flat=True)) == sorted(granted)
    assert len({h.request_id for h in holds}) == 15
    account.refresh_from_db()
    assert account.held == 15 * AMOUNT
    # Fewer commits than holds: they went in groups.
    assert transactions_that_wrote("billing_hold") < 15


def test_a_group_spanning_accounts_gives_each_account_its_own_answer():
    rich = ApiKeyFactory(account=AccountFactory(credit=100 * AMOUNT))
    poor = ApiKeyFactory(account=AccountFactory(credit=2 * AMOUNT))
    suspended = ApiKeyFactory(account=AccountFactory(credit=100 * AMOUNT))
    Account.objects.filter(pk=suspended.account_id).update(status=Account.Status.SUSPENDED)

    results = run(reserve_all([poor, rich, suspended], 6))

    by_key: dict[int, list] = {k.id: [] for k in (rich, poor, suspended)}
    for i, result in enumerate(results):
        by_key[(poor, rich, suspended)[i % 3].id].append(result)  # the order asked in
    assert all(isinstance(r, int) for r in by_key[rich.id])
    assert sum(isinstance(r, int) for r in by_key[poor.id]) == 2
    assert by_key[suspended.id] == [HoldRefused.ACCOUNT_SUSPENDED] * 6
    for key, expected in ((rich, 6), (poor, 2), (suspended, 0)):
        key.account.refresh_from_db()
        assert key.account.held == expected * AMOUNT
        assert Hold.objects.filter(account=key.account).count() == expected


def record_fields(key, hold_id: int, request_id: str, cost: int) -> dict:
    return {
        "request_id": request_id,
        "endpoint": "chat.completions",
        "account_id": key.account_id,
        "api_key_id": key.id,
        "hold_id": hold_id,
        "model_requested": "m",
        "model_served": "m",
        "upstream_model": "m",
        "status": "success",
        "error_code": "",
        "user": "",
        "client_ip": "10.1.2.3",
        "http_status": 200,
        "output_tokens": 10,
        "images": 2,
        "unit_details": {"images": {"1024x1024/hd": 2}},
        "cost_pico": cost,
        "attempts": [{"channel": 1, "status": 200}],
        "price_snapshot": {"model": "m"},
    }


def test_records_written_together_each_get_their_own_id():
    key = ApiKeyFactory(account=AccountFactory(credit=100 * AMOUNT))
    holds = run(reserve_all([key], 20))

    async def write_all():
        return await asyncio.gather(
            *(
                usage_record_finish_async(**record_fields(key, hold, f"req-{i}", cost=i + 1))
                for i, hold in enumerate(holds)
            )
        )

    ids = run(write_all())

    assert len(set(ids)) == 20
    for i, usage_id in enumerate(ids):
        record = UsageRecord.objects.get(pk=usage_id)
        assert (record.request_id, record.hold_id, record.cost_pico) == (
            f"req-{i}",
            holds[i],
            i + 1,
        )
        assert record.unit_details == {"images": {"1024x1024/hd": 2}}
        assert (record.attempts, record.client_ip) == ([{"channel": 1, "status": 200}], "10.1.2.3")
    assert transactions_that_wrote("usage_usagerecord") < 20


def test_one_bad_record_fails_alone_and_the_rest_of_its_group_is_written():
    key = ApiKeyFactory(account=AccountFactory(credit=100 * AMOUNT))
    holds = run(reserve_all([key], 8))

    async def write_all():
        return await asyncio.gather(
            *(
                # A negative cost breaks a database constraint.
                usage_record_finish_async(
                    **record_fields(key, hold, f"req-{i}", cost=-1 if i == 3 else 5)
                )
                if i != 5
                # and a request id too long for its column is refused, not cut short.
                else usage_record_finish_async(**record_fields(key, hold, "x" * 300, cost=5))
                for i, hold in enumerate(holds)
            ),
            return_exceptions=True,
        )

    outcomes = run(write_all())

    assert isinstance(outcomes[3], IntegrityError)
    assert isinstance(outcomes[5], DataError)
    written = [o for i, o in enumerate(outcomes) if i not in (3, 5)]
    assert all(isinstance(o, int) for o in written)
    assert set(UsageRecord.objects.values_list("pk", flat=True)) == set(written)
    assert not UsageRecord.objects.filter(hold_id__in=[holds[3], holds[5]]).exists()


def test_holds_asked_for_together_stay_within_the_keys_daily_spend_limit():
    account = AccountFactory(credit=100 * AMOUNT)
    limited = ApiKeyFactory(account=account, daily_spend_limit=4 * AMOUNT)
    free = ApiKeyFactory(account=account)

    results = run(reserve_all([limited, free], 10))

    limited_results = results[0::2]
    assert sum(isinstance(r, int) for r in limited_results) == 4
    assert set(limited_results) - {r for r in limited_results if isinstance(r, int)} == {
        HoldRefused.DAILY_LIMIT
    }
    assert all(isinstance(r, int) for r in results[1::2])
    account.refresh_from_db()
    assert account.held == 14 * AMOUNT
    spend = KeySpend.objects.get(api_key=limited, period=KeySpend.Period.DAY)
    assert (spend.held, spend.spent) == (4 * AMOUNT, 0)
