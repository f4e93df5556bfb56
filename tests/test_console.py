"""The console as its users see it: sign-in, keys, billing, statements, isolation."""

import re
from decimal import Decimal

import pytest
from django.core import mail
from django.test import Client

from accounts.keys import key_hash
from accounts.models import ApiKey
from accounts.services import account_low_balance_set, membership_add
from billing.models import Statement
from billing.services import account_credit, redemption_codes_create
from billing.statements import statement_generate
from tests.support.factories import AccountFactory, ApiKeyFactory, ModelPriceFactory, UserFactory
from tests.support.ledger import served

pytestmark = pytest.mark.django_db


@pytest.fixture
def member():
    group = ModelPriceFactory(model="gpt-4o-mini").group
    ModelPriceFactory(group=group, model="o4-mini")
    account = AccountFactory(name="Acme", price_group=group, credit=2_500_000)
    user = UserFactory(username="alice", email="alice@example.com")
    membership_add(account=account, user=user, role="owner")
    client = Client()
    client.force_login(user)
    return client, account, user


@pytest.fixture
def stranger():
    """Another account with its own key and statement."""
    account = AccountFactory(name="Other Inc", price_group=ModelPriceFactory().group, credit=1_000)
    key = ApiKeyFactory(account=account, name="their key")
    from datetime import date, timedelta

    last_month = date.today().replace(day=1) - timedelta(days=1)
    statement = statement_generate(account_id=account.pk, period_start=last_month)
    return account, key, statement


def test_pages_need_sign_in():
    for url in ["/", "/keys/", "/usage/", "/billing/", "/models/"]:
        response = Client().get(url)
        assert response.status_code == 302 and response.url.startswith("/login/")


def test_sign_in_lands_on_the_dashboard(member):
    _, account, user = member
    user.set_password("correct horse battery")
    user.save()
    browser = Client()
    bad = browser.post("/login/", {"username": "alice", "password": "nope"})
    assert (
        bad.status_code == 200
        and "Please enter a correct username and password" in bad.content.decode()
    )
    good = browser.post("/login/", {"username": "alice", "password": "correct horse battery"})
    assert good.status_code == 302 and good.url == "/"
    page = browser.get("/").content.decode()
    assert "Acme" in page and "$2.50" in page


def test_a_user_without_an_account_is_told_so():
    client = Client()
    client.force_login(UserFactory())
    response = client.get("/")
    assert response.status_code == 403
    assert "not a member of an account" in response.content.decode()


def test_creating_a_key_shows_the_secret_once(member):
    client, account, _ = member
    response = client.post(
        "/keys/",
        {
            "name": "backend",
            "allowed_models": ["o4-mini"],
            "rpm_limit": "60",
            "daily_spend": "1.5",
            "ip_allowlist": "10.0.0.0/8\n192.168.1.7",
        },
    )
    key = ApiKey.objects.get(name="backend")
    assert response.url == f"/keys/{key.pk}/created/"
    page = client.get(response.url).content.decode()
    secret = re.search(r"sk-tg-[0-9A-Za-z]{38}", page).group(0)
    assert key_hash(secret) == key.key_hash
    assert (key.allowed_models, key.rpm_limit, key.daily_spend_limit) == (
        ["o4-mini"],
        60,
        1_500_000,
    )
    assert key.ip_allowlist == ["10.0.0.0/8", "192.168.1.7"]
    again = client.get(response.url).content.decode()
    assert secret not in again and "already shown" in again
    assert secret not in client.get("/keys/").content.decode()


def test_key_form_errors_are_shown_in_place_and_nothing_is_made(member):
    client, _, _ = member
    response = client.post(
        "/keys/",
        {"name": "", "rpm_limit": "0", "tpm_limit": "99999999999", "ip_allowlist": "not-an-ip"},
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "This field is required." in page
    assert "greater than or equal to 1" in page
    assert "less than or equal to 2147483647" in page
    assert "“not-an-ip” is not an IP address" in page
    assert not ApiKey.objects.exists()


def test_a_key_that_could_never_work_is_refused_and_an_expired_one_says_so(member):
    from datetime import timedelta

    from django.utils import timezone

    client, account, _ = member
    response = client.post("/keys/", {"name": "stale", "expires_at": "2020-01-01T00:00"})
    page = response.content.decode()
    assert response.status_code == 200 and "This expiry is in the past" in page
    assert not ApiKey.objects.filter(name="stale").exists()
    key = ApiKeyFactory(account=account, name="yesterday's")
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(days=1))
    page = client.get("/keys/").content.decode()
    row = page[page.index("yesterday&#x27;s") :][:600]
    assert '<span class="badge muted">expired</span>' in row
    assert "Revoke" not in row  # nothing left to revoke: it no longer works


def test_editing_limits_and_revoking(member):
    client, account, _ = member
    key = ApiKeyFactory(account=account, name="worker")
    response = client.post(
        f"/keys/{key.pk}/edit/", {"name": "worker", "tpm_limit": "50000", "monthly_spend": "20"}
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.tpm_limit, key.monthly_spend_limit) == (50_000, 20_000_000)
    assert client.get(f"/keys/{key.pk}/revoke/").status_code == 405  # POST only
    client.post(f"/keys/{key.pk}/revoke/")
    key.refresh_from_db()
    assert key.status == "revoked"


def test_one_account_never_reaches_anothers_keys_or_statements(member, stranger):
    client, _, _ = member
    _, their_key, their_statement = stranger
    assert client.get(f"/keys/{their_key.pk}/edit/").status_code == 404
    assert client.post(f"/keys/{their_key.pk}/edit/", {"name": "pwned"}).status_code == 404
    assert client.post(f"/keys/{their_key.pk}/revoke/").status_code == 404
    assert client.get(f"/keys/{their_key.pk}/created/").status_code == 404
    assert client.get(f"/billing/statements/{their_statement.pk}/").status_code == 404
    their_key.refresh_from_db()
    assert (their_key.name, their_key.status) == ("their key", "active")
    for url in ["/", "/keys/", "/billing/", "/usage/", "/models/"]:
        page = client.get(url).content.decode()
        assert "Other Inc" not in page and "their key" not in page


def test_redeeming_a_code_from_the_billing_page(member):
    client, account, _ = member
    (code,) = redemption_codes_create(amount=7_000_000)
    bad = client.post("/billing/", {"redeem": "1", "redeem-code": "TG-0000-0000-0000-0000"})
    assert "This code is not valid." in bad.content.decode()
    good = client.post("/billing/", {"redeem": "1", "redeem-code": code}, follow=True)
    assert "$7.000000 added to your balance" in good.content.decode()
    account.refresh_from_db()
    assert account.balance == 9_500_000
    page = client.get("/billing/").content.decode()
    assert "Redemption" in page and "$7.00" in page


@pytest.mark.django_db(transaction=True)  # back-dating postings needs their triggers quiet
def test_statement_page_shows_figures_that_add_up(member):
    client, account, _ = member
    key = ApiKeyFactory(account=account)
    served(key=key, cost=12_345, model="gpt-4o-mini")
    from datetime import UTC, date, datetime, timedelta

    from billing.models import Transaction
    from tests.support.ledger import backdate

    # Statements are of months that have ended: this account's month was the last.
    last_month = date.today().replace(day=1) - timedelta(days=1)
    backdate(
        Transaction.objects.filter(account=account).values_list("pk", flat=True),
        datetime.combine(last_month, datetime.min.time(), UTC),
    )
    statement = statement_generate(account_id=account.pk, period_start=last_month)
    page = client.get(f"/billing/statements/{statement.pk}/").content.decode()
    assert "gpt-4o-mini" in page and "-$0.012345" in page and "$2.487655" in page
    assert (
        Statement.objects.get(pk=statement.pk).closing
        == account.__class__.objects.get(pk=account.pk).balance
    )


def test_models_page_lists_the_groups_prices(member):
    client, _, _ = member
    page = client.get("/models/").content.decode()
    assert "gpt-4o-mini" in page and "o4-mini" in page and "$0.15" in page


def test_models_page_shows_every_component_at_the_rate_the_account_pays(member):
    client, account, _ = member
    group = account.price_group
    ModelPriceFactory(
        group=group,
        model="claude-sonnet-4-5",
        components=[
            {"unit": "input", "rate": "3"},
            {"unit": "output", "rate": "15"},
            {"unit": "cache_write_1h", "rate": "6"},
            {"unit": "input", "rate": "6", "above": 200_000},
            {"unit": "tool_call", "rate": "10", "tool": "web_search"},
        ],
    )
    ModelPriceFactory(
        group=group,
        model="dall-e-3",
        mode="image_generation",
        components=[
            {"unit": "image", "rate": "0.04", "size": "1024x1024", "quality": "standard"},
            {"unit": "image", "rate": "0.08", "size": "1024x1024", "quality": "hd"},
        ],
    )
    group.multiplier = Decimal("1.5")
    group.save()
    page = client.get("/models/").content.decode()
    assert "list prices \u00d7 1.5" in page
    # Every rate shown is the one charged: the group's multiplier applied.
    assert "$4.50" in page and "$22.50" in page  # sonnet's input and output columns
    assert "Cache write tokens (1 hour): $9.00 per 1M tokens" in page
    assert "Input tokens (prompts above 200,000 tokens): $9.00 per 1M tokens" in page
    assert "Web search calls: $15.00 per 1K calls" in page
    assert "Images (1024x1024, hd): $0.12 per image" in page
    assert "Images (1024x1024, standard): $0.06 per image" in page


@pytest.mark.django_db(transaction=True)
def test_low_balance_alert_emails_once_per_crossing(celery_worker_thread):
    from tests.support.waiting import wait_for

    account = AccountFactory(price_group=ModelPriceFactory().group, credit=10_000)
    user = UserFactory(email="owner@example.com")
    membership_add(account=account, user=user, role="owner")
    key = ApiKeyFactory(account=account)
    account_low_balance_set(account=account, threshold=5_000)

    served(key=key, cost=3_000, request_id="a")  # 7,000: still above
    served(key=key, cost=3_000, request_id="b")  # 4,000: crosses
    served(key=key, cost=1_000, request_id="c")  # 3,000: already told
    alert = wait_for(lambda: mail.outbox[0] if mail.outbox else None)
    assert alert.to == ["owner@example.com"] and "below $0.005" in alert.subject

    account_credit(account=account, amount=10_000)  # 13,000: re-armed
    served(key=key, cost=9_000, request_id="d")  # 4,000: crosses again
    wait_for(lambda: len(mail.outbox) == 2)
    import time

    time.sleep(0.3)
    assert len(mail.outbox) == 2


def test_admin_overview_for_staff_only(member, admin_client):
    client, account, _ = member
    served(key=ApiKeyFactory(account=account), cost=2_000, upstream_cost=1_500)
    page = admin_client.get("/admin/overview/").content.decode()
    assert "Channel health" in page and "$0.002" in page and "$0.0005" in page
    assert "/admin/overview/" in admin_client.get("/admin/").content.decode()
    assert client.get("/admin/overview/").status_code == 302  # not staff: to the admin login


def test_usage_log_filters_pages_and_exports(member, stranger):
    client, account, _ = member
    first = ApiKeyFactory(account=account, name="first")
    second = ApiKeyFactory(account=account, name="second")
    for i in range(60):
        served(
            key=first if i % 2 else second,
            cost=100 + i,
            model="gpt-4o-mini" if i % 3 else "o4-mini",
            request_id=f"req-{i:02d}",
        )
    served(key=stranger[1], cost=5, request_id="not-yours")

    page = client.get("/usage/").content.decode()
    ids = re.findall(r"req-\d\d", page)
    assert ids[:3] == ["req-59", "req-58", "req-57"] and len(ids) == 50 and "not-yours" not in page
    older = re.search(r'href="\?([^"]*before=[^"]+)"', page).group(1).replace("&amp;", "&")
    rest = re.findall(r"req-\d\d", client.get(f"/usage/?{older}").content.decode())
    assert rest == [f"req-{i:02d}" for i in range(9, -1, -1)]

    filtered = client.get("/usage/", {"key": first.pk, "model": "o4-mini"}).content.decode()
    assert set(re.findall(r"req-\d\d", filtered)) == {
        f"req-{i:02d}" for i in range(60) if i % 2 and i % 3 == 0
    }

    export = client.get("/usage/export.csv", {"key": second.pk})
    assert export["content-type"].startswith("text/csv") and export.streaming
    lines = b"".join(export.streaming_content).decode().splitlines()
    assert len(lines) == 1 + 30
    assert "request_id" in lines[0] and "not-yours" not in "".join(lines)
