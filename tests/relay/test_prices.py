"""Price changes are versioned and never touch requests already made."""

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from billing.pricing import Price
from billing.services import model_price_set
from core.money import TokenCounts
from tests.support.relay import chat
from tests.support.waiting import wait_for
from usage.models import UsageRecord


def settled(response) -> UsageRecord:
    rid = response.headers["x-request-id"]
    return wait_for(
        lambda: UsageRecord.objects.filter(request_id=rid, settled_at__isnull=False).first()
    )


def test_a_new_price_applies_to_later_requests_only(relay_env, upstream):
    before = settled(relay_env.post(chat()))
    assert before.price_snapshot["input"] == "0.150000"

    model_price_set(
        group_id=relay_env.group.pk,
        model="gpt-4o-mini",
        input_per_m=Decimal("0.30"),
        output_per_m=Decimal("1.20"),
    )
    model_price_set(
        group_id=relay_env.group.pk,
        model="gpt-4o-mini",
        input_per_m=Decimal("9.00"),
        output_per_m=Decimal("9.00"),
        effective_from=timezone.now() + timedelta(hours=1),
    )
    after = settled(relay_env.post(chat()))

    assert (
        after.price_snapshot["input"] == "0.300000" and after.price_snapshot["output"] == "1.200000"
    )
    new = Price.from_decimals(model="gpt-4o-mini", input="0.30", output="1.20")
    assert after.cost == new.cost(TokenCounts(input=after.input_tokens, output=after.output_tokens))
    old = UsageRecord.objects.get(pk=before.pk)
    assert (old.cost, old.price_snapshot) == (before.cost, before.price_snapshot)
    assert old.settlement.entries.get(ledger_account__kind="customer").amount == -before.cost
