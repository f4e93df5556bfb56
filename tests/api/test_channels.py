"""Channels: staff only, the upstream key write-only, changes reach the router at once."""

import pytest

from relay.models import Channel
from relay.selectors import channels_enabled
from tests.support.api import usage
from tests.support.factories import ChannelFactory

pytestmark = pytest.mark.django_db

SECRET = "sk-upstream-very-secret-4242"


def test_staff_add_a_channel_whose_key_is_never_shown(world):
    response = world.staff.post(
        "/api/channels/",
        {
            "name": "primary",
            "type": "openai",
            "base_url": "https://api.example.com/v1",
            "api_key": SECRET,
            "served_models": ["gpt-4o-mini"],
            "model_mapping": {"gpt-4o-mini": "gpt-4o-mini-2024-07-18"},
            "cost_prices": {"gpt-4o-mini": {"input": 0.1, "output": "0.4"}},
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    channel = Channel.objects.get(name="primary")
    assert channel.api_key == SECRET
    # Stored as the components of a price, from the per-token shorthand.
    assert channel.cost_prices == {
        "gpt-4o-mini": {
            "components": [{"unit": "input", "rate": "0.1"}, {"unit": "output", "rate": "0.4"}]
        }
    }
    for page in [
        response.content.decode(),
        world.staff.get("/api/channels/").content.decode(),
        world.staff.get(f"/api/channels/{channel.pk}/").content.decode(),
    ]:
        assert SECRET not in page and channel.api_key_encrypted not in page
        assert "api_key_encrypted" not in page
        assert '"has_api_key":true' in page.replace(" ", "")
    # The router sees it straight away.
    assert [c.name for c in channels_enabled() if "gpt-4o-mini" in c.models] == ["primary"]


def test_the_key_is_kept_unless_replaced_or_cleared(world):
    channel = ChannelFactory(api_key=SECRET)
    url = f"/api/channels/{channel.pk}/"
    world.staff.patch(url, {"priority": 5}, format="json")
    channel.refresh_from_db()
    assert channel.api_key == SECRET and channel.priority == 5
    world.staff.patch(url, {"api_key": "sk-new-key-1"}, format="json")
    channel.refresh_from_db()
    assert channel.api_key == "sk-new-key-1"
    response = world.staff.patch(url, {"api_key": ""}, format="json")
    assert response.json()["has_api_key"] is False
    channel.refresh_from_db()
    assert channel.api_key_encrypted == ""


def test_disabling_and_enabling_reach_the_router_at_once(world):
    channel = ChannelFactory(name="only")
    assert [c.name for c in channels_enabled()] == ["only"]
    url = f"/api/channels/{channel.pk}/"
    world.staff.patch(url, {"status": "disabled", "disabled_reason": "maintenance"}, format="json")
    assert channels_enabled() == []
    body = world.staff.patch(url, {"status": "enabled"}, format="json").json()
    assert body["health"] == "healthy" and body["disabled_reason"] == ""
    assert [c.name for c in channels_enabled()] == ["only"]


def test_an_edit_does_not_overwrite_what_the_relay_recorded_meanwhile(world):
    channel = ChannelFactory()
    stale = Channel.objects.get(pk=channel.pk)
    Channel.objects.filter(pk=channel.pk).update(last_error="upstream 500")
    world.staff.patch(f"/api/channels/{stale.pk}/", {"weight": 3}, format="json")
    channel.refresh_from_db()
    assert channel.last_error == "upstream 500" and channel.weight == 3


@pytest.mark.parametrize(
    "change",
    [
        {"base_url": ""},
        {"base_url": "not a url"},
        {"weight": 0},
        {"request_timeout": 0},
        {"cost_prices": {"m": {}}},
        {"cost_prices": {"m": {"components": [{"unit": "image", "rate": "0.04", "tool": "x"}]}}},
        {"cost_prices": {"m": {"components": "input"}}},
        {"cost_prices": {"m": {"input": "0.1", "output": "-1"}}},
        {"cost_prices": {"m": {"input": "0.0000001", "output": "1"}}},
        {"cost_prices": {"m": {"input": "Infinity", "output": "1"}}},
        {"cost_prices": {"m": {"input": "1", "output": "1", "tip": "1"}}},
        {"type": "carrier-pigeon"},
    ],
)
def test_invalid_channels_are_refused(world, change):
    body = {
        "name": "bad",
        "type": "openai",
        "base_url": "https://x.example",
        "served_models": ["m"],
    }
    response = world.staff.post("/api/channels/", {**body, **change}, format="json")
    assert response.status_code == 400
    assert not Channel.objects.filter(name="bad").exists()


def test_a_mock_channel_needs_no_url_or_key(world):
    response = world.staff.post(
        "/api/channels/", {"name": "mock", "type": "mock", "served_models": ["m"]}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["has_api_key"] is False


def test_a_channel_with_usage_is_kept_and_an_unused_one_deleted(world):
    used = ChannelFactory()
    usage(world.key_a, channel=used)
    unused = ChannelFactory()
    response = world.staff.delete(f"/api/channels/{used.pk}/")
    assert response.status_code == 409
    assert Channel.objects.filter(pk=used.pk).exists()
    assert world.staff.delete(f"/api/channels/{unused.pk}/").status_code == 204
    assert not Channel.objects.filter(pk=unused.pk).exists()
    assert [c.id for c in channels_enabled()] == [used.pk]


@pytest.mark.parametrize("path", ["/api/channels/", "/api/accounts/", "/api/price-groups/"])
def test_a_page_asked_for_past_any_number_the_database_holds_is_a_page(world, path):
    ChannelFactory.create_batch(3)
    huge = "3708531500283000782848"  # past PostgreSQL's bigint
    everything = world.staff.get(f"{path}?limit={huge}")
    assert everything.status_code == 200
    assert everything.json()["count"] == len(everything.json()["results"]) > 0
    past_the_end = world.staff.get(f"{path}?limit=2&offset={huge}")
    assert past_the_end.status_code == 200
    assert past_the_end.json()["results"] == []
