"""The daily roll-up's two backends (an upsert on PostgreSQL, update-or-create on
the embedded SQLite) fold the same records into the same rows."""

from datetime import UTC, datetime

import pytest

from tests.support.factories import AccountFactory, ApiKeyFactory, PriceGroupFactory
from usage.models import UNIT_COLUMNS, UsageDaily
from usage.services import PortableRollup, PostgresRollup, usage_daily_add

pytestmark = pytest.mark.django_db


def _records(account_id: int, key_id: int) -> list[dict]:
    day1 = datetime(2026, 11, 2, 23, 59, tzinfo=UTC)
    day2 = datetime(2026, 11, 3, 0, 1, tzinfo=UTC)
    base = {
        "account_id": account_id,
        "api_key_id": key_id,
        "model_requested": "gpt-4o-mini",
        "channel_id": None,
        "input_tokens": 10,
        "cache_read_tokens": 2,
        "cache_write_tokens": 1,
        "output_tokens": 5,
        "reasoning_tokens": 0,
        **{c: 0 for c in UNIT_COLUMNS[10:]},
        "cache_write_1h_tokens": 4,
        "audio_input_tokens": 0,
        "audio_output_tokens": 0,
        "image_input_tokens": 0,
        "image_output_tokens": 6,
        "images": 2,
        "audio_ms": 1_500,
        "search_units": 3,
        "cost_pico": 7_000_001,
        "upstream_cost_pico": 3,
    }
    return [
        {**base, "created_at": day1, "model_served": "gpt-4o-mini", "status": "success"},
        {**base, "created_at": day1, "model_served": "gpt-4o-mini", "status": "cancelled"},
        {**base, "created_at": day2, "model_served": "", "status": "rejected", "cost_pico": 0},
        {
            **base,
            "created_at": day2,
            "model_served": "o4-mini",
            "status": "success",
            "cost_pico": 9,
        },
    ]


def _rows(account_id: int) -> list[tuple]:
    return list(
        UsageDaily.objects.filter(account_id=account_id)
        .order_by("day", "model")
        .values_list(
            "day",
            "model",
            "channel_id",
            "requests",
            "errors",
            "input_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "output_tokens",
            *UNIT_COLUMNS,
            "cost_pico",
            "upstream_cost_pico",
        )
    )


@pytest.mark.parametrize(
    "backend", [PostgresRollup(), PortableRollup()], ids=["upsert", "portable"]
)
def test_both_rollup_backends_fold_records_alike(backend, monkeypatch):
    group = PriceGroupFactory()
    reference = ApiKeyFactory(account=AccountFactory(price_group=group))
    tried = ApiKeyFactory(account=AccountFactory(price_group=group))
    # The reference goes through this database's own backend, twice (a second batch
    # adds to the same rows); the backend under test gets the same two batches.
    for _ in range(2):
        usage_daily_add(records=_records(reference.account_id, reference.id))
    monkeypatch.setattr("usage.services.rollup_backend", lambda: backend)
    for _ in range(2):
        usage_daily_add(records=_records(tried.account_id, tried.id))
    assert _rows(tried.account_id) == _rows(reference.account_id)
    assert [(r[1], r[3], r[4], r[-2]) for r in _rows(tried.account_id)] == [
        ("gpt-4o-mini", 4, 2, 28_000_004),
        ("gpt-4o-mini", 2, 2, 0),  # the refusal has no served model: the one asked for
        ("o4-mini", 2, 0, 18),
    ]
    first = UsageDaily.objects.filter(account_id=tried.account_id).order_by("day").first()
    assert (first.images, first.audio_ms, first.search_units, first.cache_write_1h_tokens) == (
        8,
        6_000,
        12,
        16,
    )
