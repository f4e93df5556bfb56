"""The usage log: scoped, filtered, cursor-paged; the CSV export streams the same rows."""

import csv
import io
import json
import warnings
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from accounts.services import membership_add
from tests.support.api import usage
from tests.support.factories import (
    AccountFactory,
    ApiKeyFactory,
    ChannelFactory,
    PriceGroupFactory,
    UserFactory,
)
from tests.support.ledger import served
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def log(client, query=""):
    response = client.get(f"/api/usage/{query}")
    assert response.status_code == 200, response.content
    return response.json()


def export_rows(client, query=""):
    response = client.get(f"/api/usage/export/{query}")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="usage-')
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_records_are_listed_newest_first_with_their_exact_costs(world):
    record = served(key=world.key_a, cost=1_234, model="gpt-4o-mini", request_id="charged")
    usage(world.key_a, request_id="free", created_at=T0)
    body = log(world.alice)
    assert [r["request_id"] for r in body["results"]] == ["charged", "free"]
    top = body["results"][0]
    assert top["id"] == record.pk and top["cost"] == 1_234 and top["cost_usd"] == "0.001234"
    assert top["api_key"] == world.key_a.pk and top["api_key_name"] == "alice's key"
    assert world.alice.get(f"/api/usage/{record.pk}/").json()["cost"] == 1_234
    assert top["cost_pico"] == 1_234_000_000


def test_every_unit_billed_is_in_the_log_and_the_export(world):
    tiny = served(key=world.key_a, cost_pico=100_000, request_id="embedding")
    UsageRecord.objects.filter(pk=tiny.pk).update(
        images=3,
        audio_ms=12_345,
        characters=1_234,
        search_units=3,
        tool_calls=2,
        cache_write_1h_tokens=10_000,
        unit_details={"images": {"1024x1024/hd": 3}, "tool_calls": {"web_search": 2}},
    )
    row = log(world.alice)["results"][0]
    assert row["cost"] == 0 and row["cost_pico"] == 100_000 and row["cost_usd"] == "0.0000001"
    assert (row["images"], row["audio_seconds"], row["characters"]) == (3, 12.345, 1_234)
    assert (row["search_units"], row["tool_calls"], row["cache_write_1h_tokens"]) == (3, 2, 10_000)
    assert row["unit_details"]["tool_calls"] == {"web_search": 2}
    line = export_rows(world.alice)[0]
    assert (line["cost_pico"], line["cost_usd"]) == ("100000", "0.0000001")
    assert (line["images"], line["audio_seconds"], line["search_units"]) == ("3", "12.345", "3")
    assert json.loads(line["unit_details"])["images"] == {"1024x1024/hd": 3}


def test_upstream_costs_and_channels_are_for_staff_eyes_only(world):
    channel = ChannelFactory(name="secret-upstream")
    usage(
        world.key_a,
        channel=channel,
        upstream_model="gpt-4o-mini-2024-07-18",
        attempts=[{"channel": "secret-upstream", "error": "timeout"}],
    )
    member = log(world.alice)["results"][0]
    assert member["channel"] is None and member["upstream_model"] is None
    assert member["attempts"] is None and member["upstream_cost"] is None
    assert "secret-upstream" not in world.alice.get("/api/usage/").content.decode()
    staff = log(world.staff)["results"][0]
    assert staff["channel"] == channel.pk and staff["attempts"][0]["error"] == "timeout"
    assert staff["upstream_model"] == "gpt-4o-mini-2024-07-18"


def test_filters_narrow_the_log_and_the_export_alike(world):
    other_key = ApiKeyFactory(account=world.a, name="batch")
    usage(world.key_a, request_id="early", created_at=T0)
    usage(
        world.key_a,
        request_id="failed",
        status="upstream_error",
        http_status=502,
        created_at=T0 + timedelta(hours=1),
    )
    usage(other_key, request_id="other-key", created_at=T0 + timedelta(hours=2))
    usage(
        world.key_a,
        request_id="auto",
        model_requested="auto",
        model_served="o4-mini",
        created_at=T0 + timedelta(hours=3),
    )
    usage(world.key_a, request_id="late", created_at=T0 + timedelta(days=2))

    cases = {
        f"?key={other_key.pk}": ["other-key"],
        "?status=upstream_error": ["failed"],
        "?model=o4-mini": ["auto"],
        "?model=auto": ["auto"],
        "?from=2026-03-01T13:00:00Z&to=2026-03-02T00:00:00Z": ["auto", "other-key", "failed"],
        "?from=2026-03-01T12:00:00%2B00:00&to=2026-03-01T13:00:00Z": ["early"],
        f"?key={world.key_a.pk}&status=success&to=2026-03-02T00:00:00Z": ["auto", "early"],
    }
    for query, expected in cases.items():
        assert [r["request_id"] for r in log(world.alice, query)["results"]] == expected, query
        assert [r["request_id"] for r in export_rows(world.alice, query)] == expected, query


@pytest.mark.parametrize(
    "query",
    [
        "?from=yesterday",
        "?status=great",
        "?key=abc",
        "?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z",
    ],
)
def test_bad_filters_are_refused(world, query):
    assert world.alice.get(f"/api/usage/{query}").status_code == 400
    assert world.alice.get(f"/api/usage/export/{query}").status_code == 400


def test_cursor_pages_walk_every_record_once_even_with_equal_timestamps(world):
    UsageRecord.objects.bulk_create(
        UsageRecord(
            account=world.a,
            api_key=world.key_a,
            request_id=f"r{i}",
            model_requested="m",
            status="success",
            http_status=200,
            # Groups of identical timestamps, as a busy second produces.
            created_at=T0 + timedelta(seconds=i // 4),
        )
        for i in range(23)
    )
    usage(world.key_b, request_id="bob")
    seen = []
    url = "/api/usage/?limit=5"
    while url:
        body = world.alice.get(url).json()
        assert "count" not in body
        seen += [(r["created_at"], r["id"]) for r in body["results"]]
        url = body["next"]
    assert len(seen) == 23 and len(set(seen)) == 23
    assert seen == sorted(seen, reverse=True)


def test_a_log_page_costs_the_same_queries_however_many_records(world):
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            log(world.alice)
        return len(queries)

    usage(world.key_a)
    first = count()
    for i in range(20):
        usage(ApiKeyFactory(account=world.a), request_id=f"k{i}")
    assert count() == first


def test_staff_see_every_account_or_one(world):
    usage(world.key_a, request_id="alice-1")
    usage(world.key_b, request_id="bob-1")
    assert {r["request_id"] for r in log(world.staff)["results"]} == {"alice-1", "bob-1"}
    only_b = log(world.staff, f"?account={world.b.pk}")["results"]
    assert [r["request_id"] for r in only_b] == ["bob-1"]
    assert {r["request_id"] for r in export_rows(world.staff)} == {"alice-1", "bob-1"}


def test_the_export_has_costs_and_quotes_what_a_spreadsheet_would_run(world):
    served(key=world.key_a, cost=2_500_000, request_id='=HYPERLINK("http://evil")')
    usage(world.key_a, request_id="plain", user="@SUM(A1)", created_at=T0)
    rows = export_rows(world.alice)
    assert rows[0]["request_id"] == '\'=HYPERLINK("http://evil")'
    assert rows[0]["cost_pico"] == "2500000000000" and rows[0]["cost_usd"] == "2.500000"
    assert rows[0]["account_id"] == str(world.a.pk) and rows[0]["api_key_name"] == "alice's key"
    assert rows[1]["user"] == "'@SUM(A1)" and rows[1]["created_at"].startswith("2026-03-01T12:00")
    assert not any(c.startswith("upstream_cost") for c in rows[0]) and "channel" not in rows[0]


def test_the_export_of_nothing_is_a_header(world):
    assert export_rows(world.nobody) == []
    response = world.nobody.get("/api/usage/export/")
    assert b"".join(response.streaming_content).decode().startswith("created_at,request_id,")


@pytest.mark.django_db(transaction=True)
def test_the_export_streams_from_the_asgi_server(tollgate_server):
    """Served the way production serves it. Django reads a synchronous iterator to its
    end before sending anything over ASGI (and warns); the export must not."""
    account = AccountFactory(price_group=PriceGroupFactory())
    key = ApiKeyFactory(account=account)
    UsageRecord.objects.bulk_create(
        UsageRecord(
            account=account,
            api_key=key,
            request_id=f"row-{i}",
            model_requested="m",
            status="success",
            http_status=200,
        )
        for i in range(3000)
    )
    usage(ApiKeyFactory(), request_id="not-yours")
    user = UserFactory()
    membership_add(account=account, user=user)
    token = Token.objects.create(user=user)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with httpx.Client(base_url=tollgate_server.url, timeout=30) as http:
            response = http.get(
                "/api/usage/export/", headers={"Authorization": f"Token {token.key}"}
            )
    assert response.status_code == 200
    lines = response.text.splitlines()
    assert len(lines) == 3001 and "not-yours" not in response.text
    assert lines[1].split(",")[1] == "row-2999"
    assert not [w for w in caught if "StreamingHttpResponse" in str(w.message)]
