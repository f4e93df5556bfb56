"""What an attacker would try against the console, the admin and the management API:
password guessing, cross-site forms, reading secrets from the database, and reaching
another account's data. (tests/api/test_access.py and tests/test_console.py pin the
named cases; this file sweeps every route and table.)"""

import re
import time
from datetime import date

import pytest
from django.contrib import admin
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from accounts.keys import key_hash, key_is_well_formed
from accounts.models import ApiKey, Membership
from billing.models import Entry, Statement, Transaction
from billing.statements import statement_generate
from relay.models import Channel
from tests.support.api import usage
from tests.support.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"
THROTTLED = "Too many failed sign-in attempts"


@pytest.fixture
def throttle(settings):
    settings.LOGIN_THROTTLE = {
        "FAILURES_PER_USERNAME": 3,
        "FAILURES_PER_IP": 5,
        "WINDOW_SECONDS": 60,
        "COOLDOWN_SECONDS": 1,
    }
    return settings.LOGIN_THROTTLE


def _user(username: str, **fields):
    user = UserFactory(username=username, **fields)
    user.set_password(PASSWORD)
    user.save()
    return user


def sign_in(client: Client, url: str, username: str, password: str, ip: str = "10.0.0.1"):
    response = client.post(url, {"username": username, "password": password}, REMOTE_ADDR=ip)
    signed_in = response.status_code == 302 and "_auth_user_id" in client.session
    return signed_in, response.content.decode()


@pytest.mark.parametrize("url", ["/login/", "/admin/login/"])
def test_repeated_failures_lock_the_username_then_the_cooldown_ends(throttle, url):
    _user("alice", is_staff=True)
    _user("bob", is_staff=True)
    browser = Client()
    for _ in range(3):
        ok, page = sign_in(browser, url, "alice", "guess")
        assert not ok and THROTTLED not in page

    ok, page = sign_in(browser, url, "alice", PASSWORD)
    assert not ok and THROTTLED in page
    # Case and spaces do not make a fresh username.
    assert THROTTLED in sign_in(browser, url, " ALICE", PASSWORD)[1]
    # Another user at another address is not held up.
    assert sign_in(Client(), url, "bob", PASSWORD, ip="10.0.0.2")[0]

    time.sleep(throttle["COOLDOWN_SECONDS"] + 0.2)
    assert sign_in(browser, url, "alice", PASSWORD)[0]


def test_a_successful_sign_in_clears_the_usernames_failures(throttle):
    _user("alice")
    for _ in range(2):
        assert not sign_in(Client(), "/login/", "alice", "guess")[0]
    assert sign_in(Client(), "/login/", "alice", PASSWORD)[0]
    for _ in range(2):
        assert not sign_in(Client(), "/login/", "alice", "guess")[0]
    assert sign_in(Client(), "/login/", "alice", PASSWORD)[0]


def test_guessing_across_usernames_locks_the_address(throttle):
    _user("alice")
    for n in range(5):
        assert not sign_in(Client(), "/login/", f"user{n}", "guess", ip="10.9.9.9")[0]

    ok, page = sign_in(Client(), "/login/", "alice", PASSWORD, ip="10.9.9.9")
    assert not ok and THROTTLED in page
    assert sign_in(Client(), "/login/", "alice", PASSWORD, ip="10.9.9.10")[0]


def test_admin_is_for_staff_only():
    member = Client()
    member.force_login(_user("alice"))
    assert member.get("/admin/").url.startswith("/admin/login/")
    for model in admin.site._registry:
        meta = model._meta
        for view, args in [("changelist", []), ("add", [])]:
            url = reverse(f"admin:{meta.app_label}_{meta.model_name}_{view}", args=args)
            response = member.get(url)
            assert response.status_code == 302, url
            assert response.url.startswith("/admin/login/"), url
    assert member.get("/admin/overview/").status_code in (302, 403)
    # Signing in to the admin with a member's password does not get them in either.
    ok, page = sign_in(Client(), "/admin/login/", "alice", PASSWORD)
    assert not ok and "staff account" in page


# -- cross-site request forgery ----------------------------------------------------------


def test_console_forms_refuse_posts_without_the_csrf_token(world):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(world.alice_user)
    key = world.key_a
    attempts = {
        "/keys/": {"name": "forged"},
        f"/keys/{key.pk}/edit/": {"name": "forged"},
        f"/keys/{key.pk}/revoke/": {},
        "/billing/": {"redeem": "1", "redeem-code": "TG-XXXX"},
        "/logout/": {},
    }
    for url, data in attempts.items():
        assert browser.post(url, data).status_code == 403, url
    assert (
        Client(enforce_csrf_checks=True)
        .post("/login/", {"username": "alice", "password": "x"})
        .status_code
        == 403
    )
    key.refresh_from_db()
    assert (key.name, key.status) == ("alice's key", ApiKey.Status.ACTIVE)
    assert ApiKey.objects.count() == 2
    assert "_auth_user_id" in browser.session

    # The same form with the token from the page goes through.
    browser.get("/keys/")
    token = browser.cookies["csrftoken"].value
    response = browser.post(f"/keys/{key.pk}/revoke/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.status == ApiKey.Status.REVOKED


# -- secrets at rest ---------------------------------------------------------------------


def _database_text() -> str:
    """Every row of every table, as text."""
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT t::text FROM "{table}" t')  # noqa: S608 - names from the schema
            rows += [row[0] for row in cursor.fetchall()]
    return "\n".join(rows)


def test_api_keys_are_stored_only_as_hashes(world):
    browser = Client()
    browser.force_login(world.alice_user)
    page = browser.post("/keys/", {"name": "from the console"}, follow=True).content.decode()
    from_console = re.search(r"sk-tg-[0-9A-Za-z]{38}", page).group(0)
    from_api = world.staff.post("/api/keys/", {"name": "from the api", "account": world.a.pk})
    secrets = [from_console, from_api.json()["secret"], world.key_a.secret]

    stored = _database_text()
    for secret in secrets:
        assert key_is_well_formed(secret)
        assert ApiKey.objects.filter(key_hash=key_hash(secret)).exists()
        # Neither the key nor its random part is anywhere in the database.
        assert secret not in stored
        assert secret[6:-6] not in stored


def test_upstream_keys_are_encrypted_at_rest(world):
    secret = "sk-proj-upstream-0123456789abcdefXYZ"
    response = world.staff.post(
        "/api/channels/",
        {
            "name": "openai",
            "type": "openai",
            "base_url": "https://api.example.com/v1",
            "api_key": secret,
            "served_models": ["gpt-4o-mini"],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert secret not in response.content.decode()
    assert secret not in _database_text()
    assert Channel.objects.get(pk=response.json()["id"]).api_key == secret


# -- tenant isolation --------------------------------------------------------------------


def _api_object_urls(ids: dict[str, int]) -> dict[str, str]:
    """Every management API route that names one object (URL name -> path), filled in
    with ``ids`` by the route's basename; the URL conf is walked so new routes are
    covered without being listed here."""
    urls = {}

    def fill(route: str, basename: str) -> str:
        def value(match: re.Match) -> str:
            return str(ids["membership"] if match.group(1) == "member_id" else ids[basename])

        return "/" + re.sub(r"\(\?P<(\w+)>[^)]*\)", value, route.replace("^", "").rstrip("$"))

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and route.startswith("api/"):
                if "(?P<pk>" in route and "(?P<format>" not in route:
                    basename = pattern.name.split("-")[0]
                    urls[pattern.name] = fill(route, basename) if basename in ids else ""

    walk(get_resolver().url_patterns, "")
    return urls


def test_a_member_reaches_none_of_another_accounts_objects_on_any_api_route(world):
    b = world.b
    usage(world.key_b, request_id="bob-1")
    statement_generate(account_id=b.pk, period_start=date(2020, 1, 1))
    theirs = {
        "account": b.pk,
        "apikey": world.key_b.pk,
        "usagerecord": usage(world.key_b, request_id="bob-2").pk,
        "transaction": Transaction.objects.filter(account=b).values_list("pk", flat=True)[0],
        "statement": Statement.objects.get(account=b).pk,
        "pricegroup": world.group_b.pk,
        "modelprice": world.group_b.prices.values_list("pk", flat=True)[0],
    }
    member_b = Membership.objects.get(account=b).pk
    before = (
        b.balance,
        Entry.objects.count(),
        list(ApiKey.objects.filter(account=b).values_list("name", "status", "rpm_limit")),
        Membership.objects.filter(account=b).count(),
    )

    theirs["membership"] = member_b
    urls = _api_object_urls(theirs)
    # Objects of resources only staff can reach at all (channels, redemption codes)
    # are refused to members by tests/api/test_access.py.
    staff_only = {"channel-detail", "redemptioncode-detail"}
    assert {name for name, url in urls.items() if not url} == staff_only
    for url in filter(None, urls.values()):
        for method in ("get", "put", "patch", "delete", "post"):
            response = getattr(world.alice, method)(url, {"name": "mine"}, format="json")
            assert response.status_code in (403, 404, 405), (method, url, response.status_code)
            body = response.content.decode()
            assert "Globex" not in body and "bob" not in body, (method, url)

    b.refresh_from_db()
    after = (
        b.balance,
        Entry.objects.count(),
        list(ApiKey.objects.filter(account=b).values_list("name", "status", "rpm_limit")),
        Membership.objects.filter(account=b).count(),
    )
    assert after == before


def test_the_console_never_shows_another_accounts_new_key_page(world):
    browser = Client()
    browser.force_login(world.alice_user)
    assert browser.get(f"/keys/{world.key_b.pk}/created/").status_code == 404


def test_an_api_key_is_not_a_management_api_credential(world):
    for scheme in ("Bearer", "Token"):
        world.anon.credentials(HTTP_AUTHORIZATION=f"{scheme} {world.key_a.secret}")
        for url in ["/api/usage/", "/api/usage/export/", "/api/ledger/", "/api/keys/"]:
            assert world.anon.get(url).status_code == 401, (scheme, url)
