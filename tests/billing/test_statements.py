"""Monthly statements reconcile exactly to the ledger; margin comes out of the ledger."""

from datetime import UTC, date, datetime

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction

from billing.models import Statement, Transaction
from billing.selectors import margin_report
from billing.services import (
    account_adjust,
    account_credit,
    redemption_codes_create,
    redemption_redeem,
)
from billing.statements import (
    MonthNotClosed,
    month_after,
    statement_compute,
    statement_generate,
)
from billing.tasks import statements_generate
from relay.models import Channel
from tests.support.factories import AccountFactory, ApiKeyFactory, PriceGroupFactory, UserFactory
from tests.support.ledger import backdate, served

pytestmark = pytest.mark.django_db(transaction=True)


def this_month() -> date:
    return datetime.now(UTC).date().replace(day=1)


def last_month() -> date:
    m = this_month()
    return date(m.year - 1, 12, 1) if m.month == 1 else date(m.year, m.month - 1, 1)


def test_statement_opening_plus_credits_plus_charges_is_closing_with_lines_that_add_up():
    staff = UserFactory(is_staff=True)
    account = AccountFactory(price_group=PriceGroupFactory(), overdraft_limit=0)
    key = ApiKeyFactory(account=account)
    # Last month: a top-up and some usage.
    first = account_credit(account=account, amount=10_000_000, memo="wire")
    a = served(key=key, cost=1_500, model="gpt-4o-mini", request_id="old-1")
    backdate(
        [first.pk, a.settlement_id],
        datetime.combine(last_month(), datetime.min.time(), UTC).replace(day=3),
    )
    # This month: a redemption, usage on two models, an overage and a refund reversal.
    (code,) = redemption_codes_create(amount=2_000_000)
    redemption_redeem(account=account, code=code)
    served(key=key, cost=3_000, model="gpt-4o-mini", request_id="n1")
    served(key=key, cost=4_000, model="gpt-4o-mini", request_id="n2")
    served(key=key, cost=25_000, model="o4-mini", request_id="n3")
    account_adjust(account=account, amount=-11_960_000, reason="refund reversal", staff=staff)
    # 6,500 is left: this one is charged 6,500 and 13,500 is written off as overage.
    served(key=key, cost=20_000, hold=1_000, model="o4-mini", request_id="over")

    old = statement_generate(account_id=account.pk, period_start=last_month())
    assert (old.opening, old.credits, old.charges, old.closing) == (
        0,
        10_000_000,
        -1_500,
        9_998_500,
    )
    # The month under way is computed, not stored (see the refusal below).
    now = Statement(**statement_compute(account_id=account.pk, period_start=this_month()))
    account.refresh_from_db()
    assert now.opening == old.closing
    assert now.closing == account.balance == now.opening + now.credits + now.charges
    assert now.credits == 2_000_000 and now.credit_lines == [
        {"kind": "redemption", "count": 1, "amount": 2_000_000}
    ]
    lines = {(line["kind"], line.get("model")): line for line in now.charge_lines}
    assert (
        lines[("usage", "gpt-4o-mini")]["requests"] == 2
        and lines[("usage", "gpt-4o-mini")]["amount"] == -7_000
    )
    assert lines[("usage", "o4-mini")]["amount"] == -45_000
    assert lines[("overage_written_off", None)]["amount"] == 20_000 - 6_500
    assert account.balance == 0
    assert lines[("adjustment", None)]["amount"] == -11_960_000
    assert sum(line["amount"] for line in now.charge_lines) == now.charges
    # Stored once; a second run returns the same statement.
    assert statement_generate(account_id=account.pk, period_start=last_month()).pk == old.pk
    # A month that has not ended is never stored.
    with pytest.raises(MonthNotClosed):
        statement_generate(account_id=account.pk, period_start=this_month())


def test_the_database_refuses_a_statement_that_does_not_reconcile():
    account = AccountFactory(price_group=PriceGroupFactory())
    figures = statement_compute(account_id=account.pk, period_start=this_month())
    with pytest.raises(IntegrityError), transaction.atomic():
        Statement.objects.create(**{**figures, "closing": figures["closing"] + 1})


def test_beat_task_and_command_generate_last_months_statements(capsys):
    accounts = [AccountFactory(price_group=PriceGroupFactory(), credit=1_000) for _ in range(3)]
    backdate(
        Transaction.objects.values_list("pk", flat=True),
        datetime.combine(last_month(), datetime.min.time(), UTC),
    )
    assert statements_generate() == 3
    assert {s.closing for s in Statement.objects.filter(period_start=last_month())} == {1_000}
    call_command("statements", "--month", last_month().strftime("%Y-%m"))
    out = capsys.readouterr().out
    assert all(a.name in out for a in accounts)
    # The month under way and a month to come are refused, as the API refuses them.
    future = date(this_month().year + 1, 5, 1)
    for month in (this_month(), future):
        with pytest.raises(CommandError, match="has not ended"):
            call_command("statements", "--month", month.strftime("%Y-%m"))
    assert list(Statement.objects.values_list("period_start", flat=True).distinct()) == [
        last_month()
    ]
    assert month_after(date(2026, 12, 1)) == date(2027, 1, 1)


def test_margin_per_model_channel_and_account_comes_from_the_ledger():
    group = PriceGroupFactory()
    alpha = ApiKeyFactory(account=AccountFactory(price_group=group, credit=1_000_000))
    beta = ApiKeyFactory(account=AccountFactory(price_group=group, credit=1_000_000))
    cheap = Channel.objects.create(name="cheap", served_models=["m1", "m2"])
    dear = Channel.objects.create(name="dear", served_models=["m1"])
    served(key=alpha, cost=1_000, upstream_cost=600, model="m1", channel=cheap, request_id="1")
    served(key=alpha, cost=500, upstream_cost=100, model="m2", channel=cheap, request_id="2")
    served(key=beta, cost=2_000, upstream_cost=1_900, model="m1", channel=dear, request_id="3")

    by_model = {row["model"]: row for row in margin_report(by="model")}
    assert by_model["m1"] == {"model": "m1", "revenue": 3_000, "cost": 2_500, "margin": 500}
    assert by_model["m2"]["margin"] == 400
    by_channel = {row["channel"]: row["margin"] for row in margin_report(by="channel")}
    assert by_channel == {cheap.pk: 800, dear.pk: 100}
    by_account = {row["account"]: row["margin"] for row in margin_report(by="account")}
    assert by_account == {alpha.account_id: 800, beta.account_id: 100}


def test_margin_per_day_counts_each_charge_on_the_utc_day_it_was_posted():
    key = ApiKeyFactory(account=AccountFactory(price_group=PriceGroupFactory(), credit=1_000_000))
    channel = Channel.objects.create(name="only", served_models=["m"])
    late = served(key=key, cost=700, upstream_cost=200, channel=channel, request_id="late")
    early = served(key=key, cost=50, upstream_cost=10, channel=channel, request_id="early")
    served(key=key, cost=1_000, upstream_cost=400, channel=channel, request_id="today")
    backdate([late.settlement_id], datetime(2026, 3, 9, 23, 59, 59, 999_000, tzinfo=UTC))
    backdate([early.settlement_id], datetime(2026, 3, 10, 0, 0, tzinfo=UTC))

    days = margin_report(by="day", end=datetime(2026, 3, 11, tzinfo=UTC))
    assert days == [
        {"day": date(2026, 3, 9), "revenue": 700, "cost": 200, "margin": 500},
        {"day": date(2026, 3, 10), "revenue": 50, "cost": 10, "margin": 40},
    ]
    today = margin_report(by="day", start=datetime(2026, 3, 11, tzinfo=UTC))
    assert [(row["day"], row["margin"]) for row in today] == [(datetime.now(UTC).date(), 600)]
