"""Random sequences of money operations against a reference model (hypothesis).

The reference model is a few lines of plain arithmetic; the system under test is the
real services on PostgreSQL. After every step the account, its holds, its ledger
entries and the whole reconciliation must agree with the model.
"""

from datetime import timedelta

import pytest
from django.db.models import Sum
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from billing.models import Carry, Entry, Hold, LedgerAccount
from billing.reconcile import ledger_check
from billing.services import (
    HoldRefused,
    LedgerError,
    account_credit,
    hold_reserve,
    holds_expire,
    settlement_run,
)
from tests.support.factories import AccountFactory, ApiKeyFactory, PriceGroupFactory
from usage.models import UsageRecord

OVERDRAFT = 5_000
amounts = st.integers(min_value=1, max_value=2_000_000)
# Pico-USD: a tenth of a micro-USD up to three dollars, and exact micro-USD amounts.
costs = st.one_of(
    st.integers(min_value=0, max_value=3_000_000_000_000),
    st.integers(min_value=0, max_value=3_000_000).map(lambda micro: micro * 1_000_000),
    st.integers(min_value=1, max_value=2_000_000),
)


class Ledger(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.account = AccountFactory(price_group=PriceGroupFactory(), overdraft_limit=OVERDRAFT)
        self.key = ApiKeyFactory(account=self.account)
        self.balance = 0
        self.held = 0
        self.open: dict[int, int] = {}  # hold id -> amount
        self.expired: dict[int, int] = {}
        self.overage = 0
        # Charges are whole micro-USD: what is below one micro-USD is carried.
        self.carry = 0
        self.exact = 0
        self.n = 0

    def _record(self, hold_id: int, cost: int) -> UsageRecord:
        self.n += 1
        return UsageRecord.objects.create(
            request_id=f"p{self.n}",
            account=self.account,
            api_key=self.key,
            hold_id=hold_id,
            model_requested="m",
            model_served="m",
            status="success" if cost else "upstream_error",
            http_status=200,
            output_tokens=cost // 1_000_000,
            cost_pico=cost,
        )

    def _charge(self, cost: int) -> None:
        """A record of ``cost`` pico-USD settled after its hold was released."""
        self.exact += cost
        due, self.carry = divmod(self.carry + cost, 1_000_000)
        cap = max(0, self.balance - self.held + OVERDRAFT)
        charged = min(due, cap)
        self.balance -= charged
        self.overage += due - charged

    @rule(amount=amounts)
    def top_up(self, amount):
        account_credit(account=self.account, amount=amount)
        self.balance += amount

    @rule(amount=st.integers(min_value=-2_000_000, max_value=2_000_000).filter(bool))
    def adjust(self, amount):
        allowed = self.balance + amount >= self.held - OVERDRAFT
        try:
            account_credit(account=self.account, amount=amount, kind="adjustment", memo="prop")
        except LedgerError:
            assert not allowed
        else:
            assert allowed
            self.balance += amount

    @rule(amount=amounts)
    def reserve(self, amount):
        fits = self.balance - self.held >= amount
        try:
            hold_id = hold_reserve(
                api_key_id=self.key.id, account_id=self.account.id, amount=amount, request_id="p"
            )
        except HoldRefused as refused:
            assert not fits and refused.reason == "insufficient_balance"
        else:
            assert fits
            self.open[hold_id] = amount
            self.held += amount

    @precondition(lambda self: self.open)
    @rule(data=st.data(), cost=costs)
    def settle(self, data, cost):
        hold_id = data.draw(st.sampled_from(sorted(self.open)))
        record = self._record(hold_id, cost)
        assert settlement_run(usage_ids=[record.pk]) == 1
        assert settlement_run(usage_ids=[record.pk]) == 0  # delivered twice: charged once
        self.held -= self.open.pop(hold_id)
        if cost:
            self._charge(cost)

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def expire(self, data):
        hold_id = data.draw(st.sampled_from(sorted(self.open)))
        Hold.objects.filter(pk=hold_id).update(created_at=timezone.now() - timedelta(hours=3))
        assert holds_expire(ttl_seconds=3600) == 1
        self.expired[hold_id] = self.open.pop(hold_id)
        self.held -= self.expired[hold_id]

    @precondition(lambda self: self.expired)
    @rule(data=st.data(), cost=costs.filter(bool))
    def settle_after_expiry(self, data, cost):
        hold_id = data.draw(st.sampled_from(sorted(self.expired)))
        del self.expired[hold_id]
        record = self._record(hold_id, cost)
        assert settlement_run(usage_ids=[record.pk]) == 1
        self._charge(cost)  # a direct charge: the hold is not released a second time

    @invariant()
    def books_agree_with_the_model(self):
        self.account.refresh_from_db()
        assert (self.account.balance, self.account.held) == (self.balance, self.held)
        assert self.balance - self.held >= -OVERDRAFT
        open_total = Hold.objects.filter(account=self.account, status="open").aggregate(
            s=Sum("amount")
        )["s"]
        assert (open_total or 0) == self.held
        customer = LedgerAccount.objects.get(account=self.account)
        assert (
            Entry.objects.filter(ledger_account=customer).aggregate(s=Sum("amount"))["s"] or 0
        ) == self.balance
        overage = Entry.objects.filter(
            ledger_account__kind="overage", transaction__account=self.account
        ).aggregate(s=Sum("amount"))["s"]
        assert -(overage or 0) == self.overage
        # Charged (and written off) whole micro-USD plus the carry: the exact sum.
        billed = (
            Entry.objects.filter(
                ledger_account__kind="revenue", transaction__account=self.account
            ).aggregate(s=Sum("amount"))["s"]
            or 0
        )
        carried = Carry.objects.filter(account=self.account).values_list("pico", flat=True)
        assert billed * 1_000_000 + (carried.first() or 0) == self.exact
        assert 0 <= self.exact - billed * 1_000_000 < 1_000_000
        assert ledger_check() == []


@pytest.mark.django_db
def test_random_money_operations_match_the_reference_model():
    run_state_machine_as_test(
        Ledger,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
