"""Price rows of the old shape (five per-token prices and a request fee) become
equivalent components, and past usage records keep what they were charged."""

from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from billing.models import ModelPrice
from billing.selectors import price_of
from core.money import Units
from usage.models import UsageDaily, UsageRecord

BEFORE = [("billing", "0009_modelprice_mode"), ("usage", "0005_usagerecord_failed_status")]


def _old_cost(row: dict, units: Units) -> Decimal:
    """What the old price rows charged, from their columns (USD): cache and reasoning
    prices fell back to input and output when empty, plus the request fee."""

    def rate(name: str, fallback: str) -> Decimal:
        value = row[name] if row[name] is not None else row[fallback]
        return Decimal(value) / 1_000_000

    return (
        units.input * rate("input_per_m", "input_per_m")
        + units.cache_read * rate("cache_read_per_m", "input_per_m")
        + units.cache_write * rate("cache_write_per_m", "input_per_m")
        + units.output * rate("output_per_m", "output_per_m")
        + units.reasoning * rate("reasoning_per_m", "output_per_m")
        + Decimal(row["request_fee"])
    )


OLD_ROWS = [
    {
        "model": "gpt-4o-mini",
        "input_per_m": "0.15",
        "output_per_m": "0.60",
        "cache_read_per_m": None,
        "cache_write_per_m": None,
        "reasoning_per_m": None,
        "request_fee": "0",
    },
    {
        "model": "claude-sonnet-4",
        "input_per_m": "3.00",
        "output_per_m": "15.00",
        "cache_read_per_m": "0.30",
        "cache_write_per_m": "3.75",
        "reasoning_per_m": None,
        "request_fee": "0.0005",
    },
    {
        "model": "o4-mini",
        "input_per_m": "1.10",
        "output_per_m": "4.40",
        "cache_read_per_m": "0.275",
        "cache_write_per_m": None,
        "reasoning_per_m": "8.80",
        "request_fee": "0",
    },
]


@pytest.mark.django_db(transaction=True)
def test_old_price_rows_become_equivalent_components_and_records_keep_their_cost():
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(BEFORE)
    try:
        old = executor.loader.project_state(BEFORE).apps
        Group = old.get_model("billing", "PriceGroup")
        Price = old.get_model("billing", "ModelPrice")
        Account = old.get_model("accounts", "Account")
        Record = old.get_model("usage", "UsageRecord")
        Daily = old.get_model("usage", "UsageDaily")
        group = Group.objects.create(name="legacy")
        ids = {row["model"]: Price.objects.create(group=group, **row).pk for row in OLD_ROWS}
        account = Account.objects.create(name="Old customer", price_group=group)
        Record.objects.create(
            request_id="old",
            account=account,
            model_requested="gpt-4o-mini",
            status="rejected",
            http_status=200,
            input_tokens=1_000,
            cost=1_234,
            upstream_cost=567,
            price_snapshot={"input": "0.150000", "output": "0.600000"},
        )
        Daily.objects.create(
            day="2026-11-01", account=account, model="gpt-4o-mini", cost=1_234, upstream_cost=567
        )

        executor = MigrationExecutor(connection)
        executor.migrate(latest)

        units = Units(input=1_000, cache_read=2_000, cache_write=300, output=400, reasoning=500)
        for row in OLD_ROWS:
            version = ModelPrice.objects.get(pk=ids[row["model"]])
            price = price_of(version)
            assert Decimal(price.cost(units)) / 10**12 == _old_cost(row, units), row["model"]
        sonnet = ModelPrice.objects.get(pk=ids["claude-sonnet-4"])
        assert sorted(sonnet.components.values_list("unit", flat=True)) == [
            "cache_read",
            "cache_write",
            "input",
            "output",
            "request",
        ]
        record = UsageRecord.objects.get(request_id="old")
        assert (record.cost_pico, record.upstream_cost_pico) == (1_234 * 10**6, 567 * 10**6)
        assert record.price_snapshot == {"input": "0.150000", "output": "0.600000"}
        assert (record.images, record.audio_ms, record.unit_details) == (0, 0, {})
        day = UsageDaily.objects.get(account_id=account.pk)
        assert (day.cost_pico, day.upstream_cost_pico) == (1_234 * 10**6, 567 * 10**6)
    finally:
        MigrationExecutor(connection).migrate(latest)
