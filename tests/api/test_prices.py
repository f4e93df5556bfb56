"""Price groups and versioned prices: staff publish versions of components, members
read their current prices."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import ModelPrice, PriceComponent, PriceGroup
from billing.selectors import price_current
from core.money import Units

pytestmark = pytest.mark.django_db


def test_staff_create_and_rename_price_groups(world):
    made = world.staff.post("/api/price-groups/", {"name": "wholesale", "description": "big"})
    assert made.status_code == 201
    assert made.json()["multiplier"] == "1.0000"
    url = f"/api/price-groups/{made.json()['id']}/"
    assert world.staff.patch(url, {"description": "bigger"}).json()["description"] == "bigger"
    duplicate = world.staff.post("/api/price-groups/", {"name": "wholesale"})
    assert duplicate.status_code == 400
    assert PriceGroup.objects.filter(name="wholesale").count() == 1


def test_a_group_multiplier_applies_to_later_requests_at_once(world):
    group = world.group_a
    before = price_current(group_id=group.pk, model="gpt-4o-mini")
    assert before.cost(Units(input=1_000_000)) == 150_000 * 10**6
    response = world.staff.patch(f"/api/price-groups/{group.pk}/", {"multiplier": "1.2"})
    assert response.status_code == 200, response.json()
    after = price_current(group_id=group.pk, model="gpt-4o-mini")
    assert after.cost(Units(input=1_000_000)) == 180_000 * 10**6
    assert (
        world.staff.patch(f"/api/price-groups/{group.pk}/", {"multiplier": "-1"}).status_code == 400
    )
    assert (
        world.alice.patch(f"/api/price-groups/{group.pk}/", {"multiplier": "0"}).status_code == 403
    )


def test_a_new_price_is_a_new_version_that_applies_at_once(world):
    group = world.group_a
    old = price_current(group_id=group.pk, model="gpt-4o-mini")
    response = world.staff.post(
        "/api/prices/",
        {
            "group": group.pk,
            "model": "gpt-4o-mini",
            "components": [
                {"unit": "input", "rate": "0.20"},
                {"unit": "output", "rate": "0.80"},
                {"unit": "cache_read", "rate": "0.05"},
                {"unit": "tool_call", "rate": "10", "tool": "web_search"},
                {"unit": "input", "rate": "0.40", "above": 128_000},
            ],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    shown = [(c["unit"], c["rate"], c["per"], c["above"], c["tool"]) for c in body["components"]]
    assert shown == [
        ("input", "0.20", "1M tokens", 0, ""),
        ("input", "0.40", "1M tokens", 128_000, ""),
        ("cache_read", "0.05", "1M tokens", 0, ""),
        ("output", "0.80", "1M tokens", 0, ""),
        ("tool_call", "10.00", "1K calls", 0, "web_search"),
    ]
    assert ModelPrice.objects.filter(group=group, model="gpt-4o-mini").count() == 2
    new = price_current(group_id=group.pk, model="gpt-4o-mini")
    assert new.price_id == body["id"] != old.price_id
    # 1,000 x 0.20 + 2 web searches at $10 per 1,000
    assert new.cost(Units(input=1_000, tool_calls=(("web_search", 2),))) == 20_200 * 10**6

    # A member sees only the version in effect now.
    current = world.alice.get("/api/prices/").json()["results"]
    assert [(p["model"], p["components"][0]["rate"]) for p in current] == [("gpt-4o-mini", "0.20")]
    # Staff see the history, and can ask for what is current.
    history = world.staff.get(f"/api/prices/?group={group.pk}").json()["results"]
    assert [p["components"][0]["rate"] for p in history] == ["0.20", "0.15"]
    now = world.staff.get(f"/api/prices/?group={group.pk}&current=true").json()["results"]
    assert [p["id"] for p in now] == [body["id"]]


def test_a_scheduled_price_waits_for_its_moment(world):
    later = timezone.now() + timedelta(days=1)
    response = world.staff.post(
        "/api/prices/",
        {
            "group": world.group_a.pk,
            "model": "gpt-4o-mini",
            "components": [{"unit": "input", "rate": "9"}, {"unit": "output", "rate": "9"}],
            "effective_from": later.isoformat(),
        },
        format="json",
    )
    assert response.status_code == 201
    current = world.alice.get("/api/prices/").json()["results"]
    assert [p["components"][0]["rate"] for p in current] == ["0.15"]
    assert price_current(group_id=world.group_a.pk, model="gpt-4o-mini").rate("input") == Decimal(
        "0.15"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"components": [{"unit": "input", "rate": "-1"}]},
        {"components": [{"unit": "input", "rate": "0.0000001"}]},
        {"components": [{"unit": "output", "rate": "abc"}]},
        {"components": [{"unit": "pixels", "rate": "1"}]},
        {"components": []},
        {"components": [{"unit": "input", "rate": "1"}, {"unit": "input", "rate": "2"}]},
        {"components": [{"unit": "input", "rate": "1", "size": "1024x1024"}]},
        {"components": [{"unit": "image", "rate": "0.04", "tool": "web_search"}]},
        {"components": [{"unit": "input", "rate": "1", "above": -5}]},
        {"effective_from": "2001-01-01T00:00:00Z"},
        {"group": 999_999},
    ],
)
def test_invalid_prices_are_refused(world, change):
    body = {
        "group": world.group_a.pk,
        "model": "m",
        "components": [{"unit": "input", "rate": "1"}, {"unit": "output", "rate": "1"}],
    }
    response = world.staff.post("/api/prices/", {**body, **change}, format="json")
    assert response.status_code == 400, response.json()
    assert not ModelPrice.objects.filter(model="m").exists()


def test_price_versions_are_never_edited_or_deleted(world):
    price = ModelPrice.objects.get(group=world.group_a)
    url = f"/api/prices/{price.pk}/"
    change = {"components": [{"unit": "input", "rate": "0"}]}
    assert world.staff.patch(url, change, format="json").status_code == 405
    assert world.staff.put(url, change, format="json").status_code == 405
    assert world.staff.delete(url).status_code == 405
    rates = PriceComponent.objects.filter(price=price).values_list("unit", "rate")
    assert {u: str(r.normalize()) for u, r in rates} == {"input": "0.15", "output": "0.6"}


def test_a_member_reads_their_group_and_its_current_prices_only(world):
    groups = world.alice.get("/api/price-groups/").json()["results"]
    assert [g["id"] for g in groups] == [world.group_a.pk]
    mine = ModelPrice.objects.get(group=world.group_a)
    assert world.alice.get(f"/api/prices/{mine.pk}/").status_code == 200
