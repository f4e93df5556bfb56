"""Tokens, accounts, balance, members."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.models import Account, Membership
from accounts.selectors import auth_key_get
from billing.models import LedgerAccount
from tests.support.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_a_token_is_issued_for_a_username_and_password_and_then_works(world):
    client = APIClient()
    response = client.post(
        "/api/auth/token/", {"username": "alice", "password": "pw-for-tests-1"}, format="json"
    )
    assert response.status_code == 200
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert [a["name"] for a in client.get("/api/accounts/").json()["results"]] == ["Acme"]


def test_a_wrong_password_or_inactive_user_gets_no_token(world):
    client = APIClient()
    wrong = client.post("/api/auth/token/", {"username": "alice", "password": "guess"})
    assert wrong.status_code == 400 and "token" not in wrong.json()
    UserFactory(username="gone", is_active=False)
    inactive = client.post("/api/auth/token/", {"username": "gone", "password": "pw-for-tests-1"})
    assert inactive.status_code == 400


def test_password_guessing_is_slowed_down(world):
    client = APIClient()
    codes = [
        client.post("/api/auth/token/", {"username": "alice", "password": f"guess-{i}"}).status_code
        for i in range(21)
    ]
    assert codes[:20] == [400] * 20 and codes[20] == 429


def test_the_schema_and_docs_are_served(world):
    schema = world.alice.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    assert "/api/accounts/{id}/credits/" in schema.json()["paths"]
    assert world.alice.get("/api/docs/").status_code == 200


def test_staff_create_an_account_with_its_ledger_account(world):
    response = world.staff.post(
        "/api/accounts/",
        {
            "name": "Initech",
            "price_group": world.group_a.pk,
            "concurrency_limit": 4,
            "auto_strategy": "ordered",
            "auto_models": ["gpt-4o-mini"],
            "low_balance_threshold": 1_000_000,
            "balance": 10**12,
            "held": 5,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["balance"] == 0 and body["held"] == 0 and body["available"] == 0
    assert body["concurrency_limit"] == 4 and body["auto_models"] == ["gpt-4o-mini"]
    assert body["low_balance_threshold"] == 1_000_000
    account = Account.objects.get(pk=body["id"])
    assert account.balance == 0
    assert LedgerAccount.objects.filter(account=account, kind="customer").exists()
    # The configured default overdraft applies when none is given.
    assert body["overdraft_limit"] == 50_000


def test_staff_edit_settings_but_balance_and_held_are_never_writable(world):
    url = f"/api/accounts/{world.a.pk}/"
    response = world.staff.patch(
        url,
        {"name": "Acme Ltd", "status": "suspended", "balance": 1, "held": 99, "available": 3},
        format="json",
    )
    assert response.status_code == 200
    world.a.refresh_from_db()
    assert (world.a.name, world.a.status) == ("Acme Ltd", "suspended")
    assert (world.a.balance, world.a.held) == (5_000_000, 0)


def test_suspending_an_account_reaches_the_relays_key_cache_at_once(world):
    assert auth_key_get(key_hash=world.key_a.key_hash).account_active
    world.staff.patch(f"/api/accounts/{world.a.pk}/", {"status": "suspended"}, format="json")
    assert not auth_key_get(key_hash=world.key_a.key_hash).account_active


def test_an_overdraft_limit_the_balance_is_already_past_is_refused(world):
    a = world.a
    Account.objects.filter(pk=a.pk).update(overdraft_limit=2_000_000)
    world.staff.post(
        f"/api/accounts/{a.pk}/credits/",
        {"amount": -6_000_000, "kind": "adjustment", "memo": "chargeback"},
        format="json",
    )
    a.refresh_from_db()
    assert a.balance == -1_000_000
    response = world.staff.patch(f"/api/accounts/{a.pk}/", {"overdraft_limit": 0, "name": "Z"})
    assert response.status_code == 400
    assert "overdraft_limit" in response.json()
    a.refresh_from_db()
    assert (a.overdraft_limit, a.name) == (2_000_000, "Acme")


def test_balance_shows_micro_usd_and_usd_strings(world):
    Account.objects.filter(pk=world.a.pk).update(held=250_000)
    body = world.alice.get(f"/api/accounts/{world.a.pk}/balance/").json()
    assert body == {
        "account": world.a.pk,
        "balance": 5_000_000,
        "held": 250_000,
        "available": 4_750_000,
        "balance_usd": "5.000000",
        "held_usd": "0.250000",
        "available_usd": "4.750000",
    }


def test_a_member_reads_their_account(world):
    body = world.alice.get(f"/api/accounts/{world.a.pk}/").json()
    assert body["name"] == "Acme" and body["balance"] == 5_000_000


def test_staff_add_list_and_remove_members(world):
    newcomer = UserFactory(username="carol")
    url = f"/api/accounts/{world.a.pk}/members/"
    added = world.staff.post(url, {"username": "carol", "role": "owner"}, format="json")
    assert added.status_code == 201
    assert added.json()["username"] == "carol" and added.json()["role"] == "owner"
    listed = world.staff.get(url).json()
    assert sorted(m["username"] for m in listed) == ["alice", "carol"]

    # Someone already in an account cannot be added to another.
    again = world.staff.post(f"/api/accounts/{world.b.pk}/members/", {"username": "carol"})
    assert again.status_code == 400
    assert Membership.objects.get(user=newcomer).account == world.a

    # A name no user can have is a 400 naming the field, not a database failure.
    nul = world.staff.post(f"/api/accounts/{world.b.pk}/members/", {"username": "\x00"})
    assert nul.status_code == 400 and "username" in nul.json()

    member_id = added.json()["id"]
    # The membership must belong to the account in the URL.
    assert world.staff.delete(f"/api/accounts/{world.b.pk}/members/{member_id}/").status_code == 404
    assert world.staff.delete(f"{url}{member_id}/").status_code == 204
    assert not Membership.objects.filter(user=newcomer).exists()


def test_the_account_list_costs_the_same_queries_however_many_accounts(world):
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert world.staff.get("/api/accounts/").status_code == 200
        return len(queries)

    first = count()
    for i in range(5):
        world.staff.post("/api/accounts/", {"name": f"n{i}", "price_group": world.group_a.pk})
    assert count() == first
