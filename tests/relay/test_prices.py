"""Price changes are versioned and never touch requests already made."""

from datetime import timedelta

from django.utils import timezone

from billing.pricing import Price, token_components
from billing.services import model_price_set
from core.money import Units
from tests.support.relay import chat
from tests.support.waiting import wait_for
from usage.models import UsageRecord


def rates(record: UsageRecord) -> dict[str, str]:
    """The rates the record's price snapshot says it was charged."""
    return {c["unit"]: c["rate"] for c in record.price_snapshot["components"]}


def settled(response) -> UsageRecord:
    rid = response.headers["x-request-id"]
    return wait_for(
        lambda: UsageRecord.objects.filter(request_id=rid, settled_at__isnull=False).first()
    )


def test_a_new_price_applies_to_later_requests_only(relay_env, upstream):
    before = settled(relay_env.post(chat()))
    assert rates(before) == {"input": "0.15", "output": "0.60"}

    model_price_set(
        group_id=relay_env.group.pk,
        model="gpt-4o-mini",
        components=token_components(input="0.30", output="1.20"),
    )
    model_price_set(
        group_id=relay_env.group.pk,
        model="gpt-4o-mini",
        components=token_components(input="9.00", output="9.00"),
        effective_from=timezone.now() + timedelta(hours=1),
    )
    after = settled(relay_env.post(chat()))

    assert rates(after) == {"input": "0.30", "output": "1.20"}
    new = Price.of(model="gpt-4o-mini", components=token_components(input="0.30", output="1.20"))
    assert after.cost_pico == new.cost(Units(input=after.input_tokens, output=after.output_tokens))
    old = UsageRecord.objects.get(pk=before.pk)
    assert (old.cost_pico, old.price_snapshot) == (before.cost_pico, before.price_snapshot)
    assert old.settlement.entries.get(ledger_account__kind="customer").amount == -(
        before.cost_pico // 10**6
    )
