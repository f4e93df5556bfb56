"""Margin for operators: revenue, upstream cost and margin from the ledger, per UTC day,
model, channel and account, through the management API (staff only)."""

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.factories import ChannelFactory
from tests.support.ledger import backdate, served

pytestmark = pytest.mark.django_db

PRICE = {"input": "0.10", "output": "0.40"}


@pytest.fixture
def ledger(world):
    """Acme used two models on a fully priced channel; Globex used one with a cost
    price and one without (its upstream cost is booked as zero), the latter three
    days ago."""
    cheap = ChannelFactory(
        name="cheap", served_models=["m1", "m2"], cost_prices={"m1": PRICE, "m2": PRICE}
    )
    dear = ChannelFactory(name="dear", served_models=["m1", "m3"], cost_prices={"m1": PRICE})
    served(
        key=world.key_a, cost=1_000, upstream_cost=600, model="m1", channel=cheap, request_id="1"
    )
    served(key=world.key_a, cost=500, upstream_cost=100, model="m2", channel=cheap, request_id="2")
    served(
        key=world.key_b, cost=2_000, upstream_cost=1_900, model="m1", channel=dear, request_id="3"
    )
    old = served(key=world.key_b, cost=300, model="m3", channel=dear, request_id="4")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    backdate([old.settlement_id], today - timedelta(days=3) + timedelta(hours=12))
    return cheap, dear, today


def usd(micro: int) -> str:
    return f"0.{micro:06d}"  # every figure here is under $1


def figures(revenue, cost):
    return {
        "revenue": revenue,
        "revenue_usd": usd(revenue),
        "upstream_cost": cost,
        "upstream_cost_usd": usd(cost),
        "margin": revenue - cost,
        "margin_usd": usd(revenue - cost),
    }


def test_margin_per_model_in_micro_usd_and_usd_strings(world, ledger):
    body = world.staff.get("/api/margin/?by=model").json()
    assert body["by"] == "model" and body["to"] is None
    assert body["rows"] == [
        {"model": "m1", **figures(3_000, 2_500)},
        {"model": "m2", **figures(500, 100)},
        {"model": "m3", **figures(300, 0)},
    ]
    assert body["total"] == figures(3_800, 2_600)


def test_margin_per_day_is_by_utc_posting_day(world, ledger):
    _, _, today = ledger
    body = world.staff.get("/api/margin/", {"by": "day"}).json()
    assert body["rows"] == [
        {"day": (today - timedelta(days=3)).date().isoformat(), **figures(300, 0)},
        {"day": today.date().isoformat(), **figures(3_500, 2_600)},
    ]
    # Without ?by the report is per day, over the last 30 UTC days.
    default = world.staff.get("/api/margin/").json()
    assert default["rows"] == body["rows"]
    assert default["from"] == (today - timedelta(days=29)).isoformat().replace("+00:00", "Z")


def test_margin_per_channel_names_it_and_says_when_it_is_overstated(world, ledger):
    cheap, dear, _ = ledger
    rows = world.staff.get("/api/margin/?by=channel").json()["rows"]
    assert rows == [
        {
            "channel": dear.pk,
            "name": "dear",
            "cost_prices_missing": ["m3"],
            **figures(2_300, 1_900),
        },
        {"channel": cheap.pk, "name": "cheap", "cost_prices_missing": [], **figures(1_500, 700)},
    ]


def test_margin_per_account(world, ledger):
    rows = world.staff.get("/api/margin/?by=account").json()["rows"]
    assert rows == [
        {"account": world.b.pk, "name": "Globex", **figures(2_300, 1_900)},
        {"account": world.a.pk, "name": "Acme", **figures(1_500, 700)},
    ]


def test_from_and_to_bound_the_posting_time(world, ledger):
    _, _, today = ledger
    midnight = today.isoformat()
    since = world.staff.get("/api/margin/", {"by": "model", "from": midnight}).json()
    assert [row["model"] for row in since["rows"]] == ["m1", "m2"]
    before = world.staff.get(
        "/api/margin/", {"by": "model", "from": "2020-01-01", "to": midnight}
    ).json()
    assert before["rows"] == [{"model": "m3", **figures(300, 0)}]
    assert before["total"] == figures(300, 0)
    empty = world.staff.get("/api/margin/", {"from": "2020-01-01", "to": "2020-02-01"}).json()
    assert empty["rows"] == [] and empty["total"] == figures(0, 0)


def test_only_staff_see_the_margin(world, ledger):
    assert world.alice.get("/api/margin/").status_code == 403
    assert world.nobody.get("/api/margin/?by=account").status_code == 403
    assert world.anon.get("/api/margin/").status_code == 401
    page = world.alice.get("/api/margin/?by=model").content.decode()
    assert "m1" not in page and "revenue" not in page


def test_bad_parameters_are_400_naming_the_parameter(world):
    assert world.staff.get("/api/margin/?by=week").json() == {
        "by": ['"week" is not a valid choice.']
    }
    assert list(world.staff.get("/api/margin/?from=yesterday").json()) == ["from"]
    backwards = world.staff.get("/api/margin/", {"from": "2026-02-01", "to": "2026-01-01"})
    assert backwards.status_code == 400 and backwards.json() == {"to": ["Must be later than from."]}


def test_the_margin_is_in_the_api_schema(world):
    schema = world.staff.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/margin/"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"by", "from", "to"}
