"""Top-ups, adjustments and redemption codes: every movement goes through the ledger."""

import pytest

from billing.models import RedemptionCode, Transaction

pytestmark = pytest.mark.django_db


def credit(world, account, **body):
    return world.staff.post(f"/api/accounts/{account.pk}/credits/", body, format="json")


def balance(account) -> int:
    account.refresh_from_db()
    return account.balance


def test_a_top_up_is_a_balanced_posting_by_the_staff_member(world):
    response = credit(world, world.a, amount=2_500_000, kind="topup", memo="wire 42")
    assert response.status_code == 201
    body = response.json()
    assert body["balance"]["balance"] == 7_500_000
    assert body["transaction"]["kind"] == "topup" and body["transaction"]["amount"] == 2_500_000
    assert body["transaction"]["amount_usd"] == "2.500000"
    assert body["transaction"]["created_by"] == "ops"
    assert sum(e["amount"] for e in body["transaction"]["entries"]) == 0
    txn = Transaction.objects.get(pk=body["transaction"]["id"])
    assert txn.memo == "wire 42" and txn.created_by == world.staff_user
    assert balance(world.a) == 7_500_000


def test_an_adjustment_carries_its_reason_and_may_be_negative(world):
    response = credit(world, world.a, amount=-1_000_000, kind="adjustment", memo="double charge")
    assert response.status_code == 201
    txn = Transaction.objects.get(pk=response.json()["transaction"]["id"])
    assert (txn.kind, txn.memo, txn.created_by) == ("adjustment", "double charge", world.staff_user)
    assert balance(world.a) == 4_000_000


@pytest.mark.parametrize(
    "body, message",
    [
        ({"amount": -5, "kind": "topup", "memo": "x"}, "top-up must be positive"),
        ({"amount": 0, "kind": "topup"}, "must not be zero"),
        ({"amount": 5, "kind": "adjustment", "memo": "  "}, "needs a reason"),
        ({"amount": 5, "kind": "gift"}, "not a valid choice"),
        ({"amount": "lots", "kind": "topup"}, "valid integer"),
        # The ledger refuses to take the balance past the overdraft limit (0 here).
        ({"amount": -5_000_001, "kind": "adjustment", "memo": "oops"}, "below its limit"),
    ],
)
def test_refused_credits_say_why_and_change_nothing(world, body, message):
    before = Transaction.objects.count()
    response = credit(world, world.a, **body)
    assert response.status_code == 400
    assert message in str(response.json())
    assert balance(world.a) == 5_000_000
    assert Transaction.objects.count() == before


def test_a_repeated_idempotency_key_posts_once(world):
    first = credit(world, world.a, amount=1_000, kind="topup", idempotency_key="inv-7")
    second = credit(world, world.a, amount=1_000, kind="topup", idempotency_key="inv-7")
    assert first.json()["transaction"]["id"] == second.json()["transaction"]["id"]
    assert balance(world.a) == 5_001_000
    # The same key on another account is another request.
    credit(world, world.b, amount=1_000, kind="topup", idempotency_key="inv-7")
    assert balance(world.b) == 7_001_000


def test_an_idempotency_key_reused_for_a_different_credit_is_a_conflict(world):
    credit(world, world.a, amount=1_000, kind="topup", idempotency_key="inv-8")
    response = credit(world, world.a, amount=9_000, kind="topup", idempotency_key="inv-8")
    assert response.status_code == 409
    assert balance(world.a) == 5_001_000


def test_a_caller_key_cannot_collide_with_the_ledgers_own_keys(world):
    response = credit(world, world.a, amount=1_000, kind="topup", idempotency_key="settle:1")
    assert response.status_code == 201
    assert not Transaction.objects.filter(idempotency_key="settle:1").exists()


def test_staff_make_codes_shown_once_that_a_member_redeems_once(world):
    made = world.staff.post(
        "/api/redemption-codes/", {"amount": 2_000_000, "count": 3, "memo": "promo"}
    )
    assert made.status_code == 201
    codes = made.json()["codes"]
    assert len(codes) == 3 and len(set(codes)) == 3
    assert RedemptionCode.objects.count() == 3

    listed = world.staff.get("/api/redemption-codes/")
    page = listed.content.decode()
    for code in codes:
        assert code not in page and code.replace("-", "")[2:] not in page
    assert "code_hash" not in page
    assert {row["state"] for row in listed.json()["results"]} == {"unused"}

    url = f"/api/accounts/{world.a.pk}/redeem/"
    redeemed = world.alice.post(url, {"code": codes[0].lower()})
    assert redeemed.status_code == 201
    assert redeemed.json()["balance"]["balance"] == 7_000_000
    assert redeemed.json()["transaction"]["kind"] == "redemption"

    again = world.alice.post(url, {"code": codes[0]})
    assert again.status_code == 400
    assert again.json() == {"code": ["This code has already been redeemed."]}
    bogus = world.alice.post(url, {"code": "TG-0000-0000-0000-0000"})
    assert bogus.status_code == 400 and "not valid" in str(bogus.json())
    assert balance(world.a) == 7_000_000

    states = {row["state"] for row in world.staff.get("/api/redemption-codes/").json()["results"]}
    assert states == {"unused", "redeemed"}


@pytest.mark.parametrize(
    "body",
    [
        {"amount": 0},
        {"amount": 5, "count": 1001},
        {"amount": 5, "expires_at": "2001-01-01T00:00:00Z"},
    ],
)
def test_invalid_code_batches_are_refused_whole(world, body):
    assert world.staff.post("/api/redemption-codes/", body, format="json").status_code == 400
    assert not RedemptionCode.objects.exists()
