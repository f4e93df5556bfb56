"""Who may see and change what: anonymous callers are refused everywhere, a member
never reaches another account's data, and staff-only endpoints refuse members."""

from datetime import date

import pytest

from accounts.models import ApiKey
from billing.models import ModelPrice, Statement, Transaction
from billing.statements import statement_generate
from tests.support.api import usage
from tests.support.factories import ChannelFactory

pytestmark = pytest.mark.django_db

LISTS = [
    "/api/accounts/",
    "/api/keys/",
    "/api/price-groups/",
    "/api/prices/",
    "/api/channels/",
    "/api/redemption-codes/",
    "/api/usage/",
    "/api/usage/export/",
    "/api/ledger/",
    "/api/statements/",
]


@pytest.mark.parametrize("url", LISTS)
def test_anonymous_requests_are_refused(world, url):
    response = world.anon.get(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")


def test_anonymous_writes_are_refused_and_change_nothing(world):
    anon = world.anon
    assert (
        anon.post("/api/accounts/", {"name": "x", "price_group": world.group_a.pk}).status_code
        == 401
    )
    assert (
        anon.post(
            f"/api/accounts/{world.a.pk}/credits/", {"amount": 5, "kind": "topup"}
        ).status_code
        == 401
    )
    assert anon.post("/api/keys/", {"name": "k", "account": world.a.pk}).status_code == 401
    assert anon.post(f"/api/keys/{world.key_a.pk}/revoke/").status_code == 401
    world.a.refresh_from_db()
    world.key_a.refresh_from_db()
    assert world.a.balance == 5_000_000
    assert world.key_a.status == ApiKey.Status.ACTIVE
    assert ApiKey.objects.count() == 2


def test_a_bad_token_is_refused(world):
    world.anon.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert world.anon.get("/api/accounts/").status_code == 401


def test_a_member_cannot_read_or_touch_another_accounts_objects(world):
    b = world.b
    record = usage(world.key_b, request_id="bob-1")
    txn = Transaction.objects.filter(account=b).get()
    statement = statement_generate(account_id=b.pk, period_start=date(2020, 1, 1))
    price_b = ModelPrice.objects.get(group=world.group_b)
    alice = world.alice

    for url in [
        f"/api/accounts/{b.pk}/",
        f"/api/accounts/{b.pk}/balance/",
        f"/api/keys/{world.key_b.pk}/",
        f"/api/usage/{record.pk}/",
        f"/api/ledger/{txn.pk}/",
        f"/api/statements/{statement.pk}/",
        f"/api/prices/{price_b.pk}/",
        f"/api/price-groups/{world.group_b.pk}/",
    ]:
        assert alice.get(url).status_code == 404, url

    assert alice.patch(f"/api/keys/{world.key_b.pk}/", {"name": "mine now"}).status_code == 404
    assert alice.post(f"/api/keys/{world.key_b.pk}/revoke/").status_code == 404
    assert alice.post(f"/api/accounts/{b.pk}/redeem/", {"code": "TG-XXXX"}).status_code == 404
    world.key_b.refresh_from_db()
    assert world.key_b.name == "bob's key" and world.key_b.status == ApiKey.Status.ACTIVE


def test_a_members_lists_hold_their_own_account_only_even_when_asking_for_another(world):
    usage(world.key_a, request_id="alice-1")
    usage(world.key_b, request_id="bob-1")
    statement_generate(account_id=world.a.pk, period_start=date(2020, 1, 1))
    statement_generate(account_id=world.b.pk, period_start=date(2020, 1, 1))
    alice = world.alice
    a = world.a.pk

    def ids(url, field="account"):
        body = alice.get(url).json()
        return {row[field] for row in body["results"]}

    for query in ["", f"?account={world.b.pk}"]:
        assert ids(f"/api/accounts/{query}", "id") == {a}
        assert ids(f"/api/keys/{query}") == {a}
        assert ids(f"/api/usage/{query}") == {a}
        assert ids(f"/api/ledger/{query}") == {a}
        assert ids(f"/api/statements/{query}") == {a}
        assert ids(f"/api/price-groups/{query}", "id") == {world.group_a.pk}
        assert ids(f"/api/prices/{query}", "group") == {world.group_a.pk}
        export = b"".join(alice.get(f"/api/usage/export/{query}").streaming_content).decode()
        assert "alice-1" in export and "bob-1" not in export


def test_staff_only_endpoints_refuse_members(world):
    channel = ChannelFactory()
    alice = world.alice
    a = world.a.pk
    refused = [
        alice.get("/api/channels/"),
        alice.get(f"/api/channels/{channel.pk}/"),
        alice.post("/api/channels/", {"name": "mine", "type": "mock"}, format="json"),
        alice.delete(f"/api/channels/{channel.pk}/"),
        alice.get("/api/redemption-codes/"),
        alice.post("/api/redemption-codes/", {"amount": 1_000_000}),
        alice.post("/api/accounts/", {"name": "x", "price_group": world.group_a.pk}),
        alice.patch(f"/api/accounts/{a}/", {"overdraft_limit": 10**9}),
        alice.post(f"/api/accounts/{a}/credits/", {"amount": 10**9, "kind": "topup"}),
        alice.get(f"/api/accounts/{a}/members/"),
        alice.post(f"/api/accounts/{a}/members/", {"username": "drifter"}),
        alice.post("/api/price-groups/", {"name": "cheap"}),
        alice.post(
            "/api/prices/",
            {
                "group": world.group_a.pk,
                "model": "gpt-4o-mini",
                "input_per_m": "0",
                "output_per_m": "0",
            },
        ),
        alice.post("/api/statements/generate/", {"account": a, "month": "2020-01"}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    world.a.refresh_from_db()
    assert world.a.balance == 5_000_000 and world.a.overdraft_limit == 0
    assert ModelPrice.objects.filter(group=world.group_a).count() == 1
    assert not Statement.objects.exists()
    assert world.a.memberships.count() == 1


def test_a_user_without_an_account_sees_nothing_and_cannot_make_keys(world):
    usage(world.key_a)
    nobody = world.nobody
    for url in ["/api/accounts/", "/api/keys/", "/api/usage/", "/api/ledger/", "/api/prices/"]:
        response = nobody.get(url)
        assert response.status_code == 200 and response.json()["results"] == [], url
    response = nobody.post("/api/keys/", {"name": "k", "account": world.a.pk})
    assert response.status_code == 403
    assert ApiKey.objects.count() == 2


@pytest.mark.parametrize("url", LISTS)
def test_a_null_character_in_a_filter_is_a_clear_400(world, url):
    # PostgreSQL text cannot hold NUL: such a filter is refused before any query.
    response = world.staff.get(url, {"model": "gpt\x00-4o", "status": "success"})
    assert response.status_code == 400
    assert response.json() == {"model": ["Null characters are not allowed."]}
    assert world.staff.get(url, {"model": "gpt-4o-mini"}).status_code == 200
