"""The ledger and statements: read-only, scoped, members see their side only."""

from datetime import UTC, date, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import Statement, Transaction
from tests.support.factories import ChannelFactory
from tests.support.ledger import served

pytestmark = pytest.mark.django_db


def last_month() -> date:
    first = datetime.now(UTC).date().replace(day=1)
    return date(first.year - 1, 12, 1) if first.month == 1 else first.replace(month=first.month - 1)


def test_staff_see_whole_postings_and_members_their_own_entries(world):
    channel = ChannelFactory()
    served(key=world.key_a, cost=3_000, upstream_cost=1_000, channel=channel, model="gpt-4o-mini")
    charge = Transaction.objects.get(account=world.a, kind="charge")

    staff = world.staff.get(f"/api/ledger/{charge.pk}/").json()
    assert staff["amount"] == -3_000 and staff["created_by"] is None
    kinds = {e["kind"] for e in staff["entries"]}
    assert {"customer", "revenue", "upstream_cost", "upstream_payable"} <= kinds
    assert sum(e["amount"] for e in staff["entries"]) == 0
    assert any(e["channel"] == channel.pk for e in staff["entries"])

    member = world.alice.get(f"/api/ledger/{charge.pk}/").json()
    assert member["amount"] == -3_000 and member["amount_usd"] == "-0.003000"
    assert [(e["kind"], e["amount"]) for e in member["entries"]] == [("customer", -3_000)]
    page = world.alice.get("/api/ledger/").content.decode()
    assert "upstream" not in page and "revenue" not in page


def test_the_ledger_lists_newest_first_and_filters_by_kind_and_account(world):
    world.staff.post(
        f"/api/accounts/{world.a.pk}/credits/",
        {"amount": -1, "kind": "adjustment", "memo": "rounding"},
        format="json",
    )
    rows = world.alice.get("/api/ledger/").json()["results"]
    assert [r["kind"] for r in rows] == ["adjustment", "topup"]
    # Who made an adjustment is for staff to see.
    assert rows[0]["created_by"] is None
    topups = world.staff.get(f"/api/ledger/?kind=topup&account={world.b.pk}").json()["results"]
    assert [(r["account"], r["amount"]) for r in topups] == [(world.b.pk, 7_000_000)]
    assert world.staff.get("/api/ledger/?kind=gift").status_code == 400


def test_the_ledger_cannot_be_written(world):
    txn = Transaction.objects.filter(account=world.a).first()
    assert world.staff.post("/api/ledger/", {"kind": "topup"}).status_code == 405
    assert world.staff.patch(f"/api/ledger/{txn.pk}/", {"memo": "x"}).status_code == 405
    assert world.staff.delete(f"/api/ledger/{txn.pk}/").status_code == 405


def test_staff_generate_a_closed_months_statement_once(world):
    month = last_month()
    url = "/api/statements/generate/"
    body = {"account": world.a.pk, "month": f"{month:%Y-%m}"}
    first = world.staff.post(url, body, format="json")
    assert first.status_code == 201, first.json()
    statement = first.json()
    assert statement["month"] == f"{month:%Y-%m}" and statement["account"] == world.a.pk
    assert (
        statement["opening"] + statement["credits"] + statement["charges"] == statement["closing"]
    )
    again = world.staff.post(url, body, format="json")
    assert again.status_code == 200 and again.json()["id"] == statement["id"]
    assert Statement.objects.count() == 1

    assert world.alice.get(f"/api/statements/{statement['id']}/").status_code == 200
    assert world.bob.get(f"/api/statements/{statement['id']}/").status_code == 404
    assert world.bob.get("/api/statements/").json()["results"] == []


@pytest.mark.parametrize("month", ["2026-13", "26-01", "last month", "2999-01"])
def test_statements_are_for_real_closed_months_only(world, month):
    this_month = f"{datetime.now(UTC):%Y-%m}"
    for value in [month, this_month]:
        response = world.staff.post(
            "/api/statements/generate/", {"account": world.a.pk, "month": value}
        )
        assert response.status_code == 400
        assert "month" in response.json()
    assert not Statement.objects.exists()


def test_a_ledger_page_costs_the_same_queries_however_many_postings(world):
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert world.alice.get("/api/ledger/").status_code == 200
        return len(queries)

    first = count()
    for i in range(10):
        world.staff.post(f"/api/accounts/{world.a.pk}/credits/", {"amount": i + 1, "kind": "topup"})
    assert count() == first
