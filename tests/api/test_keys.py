"""API keys: the secret once, limits through the service, revocation at once."""

import pytest

from accounts.keys import key_hash
from accounts.models import ApiKey
from accounts.selectors import auth_key_get
from relay.errors import ApiError
from relay.lifecycle.auth import authenticate

pytestmark = pytest.mark.django_db


def test_a_member_makes_a_key_whose_secret_is_shown_once_and_works(world):
    response = world.alice.post(
        "/api/keys/",
        {"name": "backend", "allowed_models": ["gpt-4o-mini"], "daily_spend_limit": 2_000_000},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    secret = body["secret"]
    key = ApiKey.objects.get(pk=body["id"])
    assert key.account == world.a and key.created_by == world.alice_user
    assert key_hash(secret) == key.key_hash
    assert body["display"] == key.display and secret.startswith(body["prefix"])
    assert body["daily_spend_limit"] == 2_000_000
    assert authenticate(secret).account_id == world.a.pk

    for page in [
        world.alice.get("/api/keys/").content.decode(),
        world.alice.get(f"/api/keys/{key.pk}/").content.decode(),
        world.staff.get("/api/keys/").content.decode(),
    ]:
        assert secret not in page and key.key_hash not in page
        assert "key_hash" not in page and "secret" not in page


def test_a_member_cannot_make_a_key_for_another_account(world):
    response = world.alice.post("/api/keys/", {"name": "sneaky", "account": world.b.pk})
    assert response.status_code == 400
    assert not ApiKey.objects.filter(name="sneaky").exists()


def test_staff_make_keys_for_any_account_and_filter_the_list(world):
    assert world.staff.post("/api/keys/", {"name": "no account"}).status_code == 400
    response = world.staff.post("/api/keys/", {"name": "ops key", "account": world.b.pk})
    assert response.status_code == 201
    assert ApiKey.objects.get(pk=response.json()["id"]).account == world.b
    everything = world.staff.get("/api/keys/").json()
    assert everything["count"] == 3
    only_b = world.staff.get(f"/api/keys/?account={world.b.pk}").json()["results"]
    assert {k["name"] for k in only_b} == {"bob's key", "ops key"}
    assert world.staff.get("/api/keys/?account=abc").status_code == 400


def test_limits_and_policy_are_updated_and_reach_the_relay_at_once(world):
    from tests.support.factories import ModelPriceFactory

    ModelPriceFactory(group=world.group_a, model="o4-mini")  # a key may allow priced models
    key = world.key_a
    assert auth_key_get(key_hash=key.key_hash).rpm_limit is None
    response = world.alice.patch(
        f"/api/keys/{key.pk}/",
        {
            "name": "renamed",
            "rpm_limit": 60,
            "monthly_spend_limit": 9_000_000,
            "allowed_models": ["o4-mini", "gpt-4o-mini", "o4-mini"],
            "ip_allowlist": ["10.0.0.0/8", "2001:db8::1"],
            "expires_at": "2099-01-01T00:00:00Z",
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    key.refresh_from_db()
    assert key.name == "renamed" and key.rpm_limit == 60
    assert key.monthly_spend_limit == 9_000_000
    assert key.allowed_models == ["gpt-4o-mini", "o4-mini"]
    assert key.ip_allowlist == ["10.0.0.0/8", "2001:db8::1"]
    assert key.expires_at.year == 2099
    assert auth_key_get(key_hash=key.key_hash).rpm_limit == 60

    # Clearing a limit.
    world.alice.patch(f"/api/keys/{key.pk}/", {"rpm_limit": None}, format="json")
    key.refresh_from_db()
    assert key.rpm_limit is None and key.name == "renamed"


@pytest.mark.parametrize(
    "body",
    [
        {"ip_allowlist": ["not-an-ip"]},
        {"daily_spend_limit": 0},
        {"rpm_limit": -1},
        # Past the columns' range: once a database error and a 500.
        {"tpm_limit": 2**40},
        {"monthly_spend_limit": 2**63},
        {"name": ""},
        {"key_hash": "0" * 64, "status": "active", "account": 999},
    ],
)
def test_invalid_or_protected_key_changes_are_refused_or_ignored(world, body):
    key = world.key_a
    before = ApiKey.objects.filter(pk=key.pk).values().get()
    response = world.alice.patch(f"/api/keys/{key.pk}/", body, format="json")
    after = ApiKey.objects.filter(pk=key.pk).values().get()
    assert response.status_code in (200, 400)
    if "key_hash" not in body:
        assert response.status_code == 400
    assert after == before


def test_keys_cannot_be_replaced_or_deleted(world):
    url = f"/api/keys/{world.key_a.pk}/"
    assert world.alice.put(url, {"name": "x"}).status_code == 405
    assert world.staff.delete(url).status_code == 405
    assert ApiKey.objects.filter(pk=world.key_a.pk).exists()


def test_a_revoked_key_stops_working_at_once(world):
    secret = world.key_a.secret
    assert authenticate(secret)
    response = world.alice.post(f"/api/keys/{world.key_a.pk}/revoke/")
    assert response.status_code == 200
    assert response.json()["status"] == "revoked" and response.json()["revoked_at"]
    with pytest.raises(ApiError) as exc:
        authenticate(secret)
    assert exc.value.status == 401
    # Revoking again is harmless.
    assert world.alice.post(f"/api/keys/{world.key_a.pk}/revoke/").status_code == 200


def test_a_key_that_could_never_work_is_refused(world):
    from datetime import timedelta

    from django.utils import timezone

    past = (timezone.now() - timedelta(hours=1)).isoformat()
    cases = [
        ({"name": "stale", "expires_at": past}, "expires_at"),
        ({"name": "ghost", "allowed_models": ["gpt-4o-mini", "no-such-model"]}, "allowed_models"),
    ]
    for body, field in cases:
        response = world.alice.post("/api/keys/", body, format="json")
        assert response.status_code == 400, response.json()
        assert field in response.json()
        assert "no-such-model" in str(response.json()) or field == "expires_at"
    assert not ApiKey.objects.filter(name__in=["stale", "ghost"]).exists()
    url = f"/api/keys/{world.key_a.pk}/"
    for body, field in [
        ({"expires_at": past}, "expires_at"),
        ({"allowed_models": ["nope"]}, "allowed_models"),
    ]:
        response = world.alice.patch(url, body, format="json")
        assert response.status_code == 400 and field in response.json()
    world.key_a.refresh_from_db()
    assert world.key_a.expires_at is None and world.key_a.allowed_models == []


def test_an_expired_key_is_shown_expired(world):
    from datetime import timedelta

    from django.utils import timezone

    ApiKey.objects.filter(pk=world.key_a.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    body = world.alice.get(f"/api/keys/{world.key_a.pk}/").json()
    assert body["status"] == "expired"
    # Renaming it still works: an expiry that is not being changed is not judged.
    renamed = world.alice.patch(f"/api/keys/{world.key_a.pk}/", {"name": "old"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["status"] == "expired"
