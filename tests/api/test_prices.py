"""Price groups and versioned prices: staff publish, members read their current prices."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import ModelPrice, PriceGroup
from billing.selectors import price_current

pytestmark = pytest.mark.django_db


def test_staff_create_and_rename_price_groups(world):
    made = world.staff.post("/api/price-groups/", {"name": "wholesale", "description": "big"})
    assert made.status_code == 201
    url = f"/api/price-groups/{made.json()['id']}/"
    assert world.staff.patch(url, {"description": "bigger"}).json()["description"] == "bigger"
    duplicate = world.staff.post("/api/price-groups/", {"name": "wholesale"})
    assert duplicate.status_code == 400
    assert PriceGroup.objects.filter(name="wholesale").count() == 1


def test_a_new_price_is_a_new_version_that_applies_at_once(world):
    group = world.group_a
    old = price_current(group_id=group.pk, model="gpt-4o-mini")
    response = world.staff.post(
        "/api/prices/",
        {
            "group": group.pk,
            "model": "gpt-4o-mini",
            "input_per_m": "0.20",
            "output_per_m": "0.80",
            "cache_read_per_m": "0.05",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["input_per_m"] == "0.200000" and body["cache_write_per_m"] is None
    assert ModelPrice.objects.filter(group=group, model="gpt-4o-mini").count() == 2
    new = price_current(group_id=group.pk, model="gpt-4o-mini")
    assert new.price_id == body["id"] != old.price_id
    assert new.input == 200_000  # pico-USD per token

    # A member sees only the version in effect now.
    current = world.alice.get("/api/prices/").json()["results"]
    assert [(p["model"], p["input_per_m"]) for p in current] == [("gpt-4o-mini", "0.200000")]
    # Staff see the history, and can ask for what is current.
    history = world.staff.get(f"/api/prices/?group={group.pk}").json()["results"]
    assert [p["input_per_m"] for p in history] == ["0.200000", "0.150000"]
    now = world.staff.get(f"/api/prices/?group={group.pk}&current=true").json()["results"]
    assert [p["id"] for p in now] == [body["id"]]


def test_a_scheduled_price_waits_for_its_moment(world):
    later = timezone.now() + timedelta(days=1)
    response = world.staff.post(
        "/api/prices/",
        {
            "group": world.group_a.pk,
            "model": "gpt-4o-mini",
            "input_per_m": "9",
            "output_per_m": "9",
            "effective_from": later.isoformat(),
        },
        format="json",
    )
    assert response.status_code == 201
    current = world.alice.get("/api/prices/").json()["results"]
    assert [p["input_per_m"] for p in current] == ["0.150000"]
    assert price_current(group_id=world.group_a.pk, model="gpt-4o-mini").input == 150_000


@pytest.mark.parametrize(
    "change",
    [
        {"input_per_m": "-1"},
        {"input_per_m": "0.0000001"},
        {"output_per_m": "abc"},
        {"effective_from": "2001-01-01T00:00:00Z"},
        {"group": 999_999},
    ],
)
def test_invalid_prices_are_refused(world, change):
    body = {"group": world.group_a.pk, "model": "m", "input_per_m": "1", "output_per_m": "1"}
    response = world.staff.post("/api/prices/", {**body, **change}, format="json")
    assert response.status_code == 400
    assert not ModelPrice.objects.filter(model="m").exists()


def test_price_versions_are_never_edited_or_deleted(world):
    price = ModelPrice.objects.get(group=world.group_a)
    url = f"/api/prices/{price.pk}/"
    assert world.staff.patch(url, {"input_per_m": "0"}).status_code == 405
    assert world.staff.put(url, {"input_per_m": "0"}).status_code == 405
    assert world.staff.delete(url).status_code == 405
    price.refresh_from_db()
    assert price.input_per_m == Decimal("0.15")


def test_a_member_reads_their_group_and_its_current_prices_only(world):
    groups = world.alice.get("/api/price-groups/").json()["results"]
    assert [g["id"] for g in groups] == [world.group_a.pk]
    mine = ModelPrice.objects.get(group=world.group_a)
    assert world.alice.get(f"/api/prices/{mine.pk}/").status_code == 200
