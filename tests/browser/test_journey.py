"""A customer's whole journey in a real browser (Debian's chromium, driven by
Playwright): sign in, create a key, call the relay with it, find the request in the
usage log and its charge in billing, export the CSV; then the same console on a
phone. Screenshots of every page (wide and narrow) are kept in artifacts/screenshots/."""

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openai
import pytest
from playwright.sync_api import expect, sync_playwright

from accounts.models import ApiKey
from accounts.services import membership_add
from billing.models import Transaction
from billing.statements import statement_generate
from core.money import micro_to_usd, pico_to_usd
from tests.support.factories import UserFactory
from tests.support.ledger import backdate
from tests.support.waiting import wait_for
from usage.models import UsageRecord

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API keeps an event loop on this thread between calls; the
    # test's own database calls are synchronous and safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


def sign_in(page, base, username, password):
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


# What scrolls sideways: the page itself, or a table inside its wrapper.
SIDEWAYS = """() => {
  const found = [];
  if (document.documentElement.scrollWidth > window.innerWidth) found.push("the page");
  document.querySelectorAll(".table-wrap").forEach((wrap) => {
    if (wrap.scrollWidth > wrap.clientWidth) {
      const panel = wrap.closest("section");
      const title = panel && panel.querySelector("h2") ? panel.querySelector("h2").textContent : "";
      found.push(`a table (${title.trim() || document.title})`);
    }
  });
  return found;
}"""


def column(page, title):
    """The cells of the usage log's column with this heading."""
    titles = [t.strip() for t in page.locator("table thead th").all_text_contents()]
    return page.locator(f"table tbody tr td:nth-child({titles.index(title) + 1})")


def on_screen(page, locator):
    """Visible and inside the viewport's width, not scrolled out of sight."""
    expect(locator).to_be_visible()
    box = locator.bounding_box()
    width = page.viewport_size["width"]
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width


def test_sign_in_create_key_call_relay_see_usage_and_charge_export_csv(
    relay_env, browser, upstream
):
    base = relay_env.url
    user = UserFactory(username="dana")
    membership_add(account=relay_env.account, user=user, role="owner")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page = context.new_page()

    sign_in(page, base, "dana", "wrong password")
    expect(page.locator(".form-errors")).to_contain_text("correct username and password")
    shot(page, "00-sign-in-error")
    sign_in(page, base, "dana", "pw-for-tests-1")
    expect(page.locator("h1")).to_have_text(relay_env.account.name)
    expect(page.locator(".stat").first).to_contain_text("$5.00")
    shot(page, "01-dashboard-empty")

    page.click("nav >> text=API keys")
    page.fill("#id_name", "")
    page.click("text=Create key")
    expect(page.locator(".field.has-error")).to_contain_text("This field is required.")
    page.fill("#id_name", "browser key")
    page.check("input[value='gpt-4o-mini']")
    page.fill("#id_rpm_limit", "100")
    page.click("text=Create key")
    secret = page.inner_text("#new-key").strip()
    assert secret.startswith("sk-tg-")
    page.click("button[data-copy='new-key']")
    expect(page.locator("button[data-copy='new-key']")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    shot(page, "02-key-created")

    client = openai.OpenAI(base_url=f"{base}/v1", api_key=secret, max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Hello from a browser test"}],
        # The upstream reports prompt tokens read from and written to its cache.
        extra_body={"mock": {"cached_tokens": 2, "cache_write_tokens": 3}},
    )
    record = wait_for(
        lambda: UsageRecord.objects.filter(
            request_id=reply._request_id, settled_at__isnull=False
        ).first()
    )

    page.click("nav >> text=Usage")
    row = page.locator("tr", has_text=reply._request_id)
    expect(row).to_contain_text("browser key")
    expect(row).to_contain_text("success")
    cost = "$" + pico_to_usd(record.cost_pico).rstrip("0").ljust(
        len(pico_to_usd(record.cost_pico).split(".")[0]) + 3, "0"
    )
    expect(row).to_contain_text(cost)
    assert (record.cache_read_tokens, record.cache_write_tokens) == (2, 3)
    expect(column(page, "Cache write").first).to_have_text("3")
    expect(column(page, "Cache read").first).to_have_text("2")
    assert page.evaluate(SIDEWAYS) == []
    shot(page, "03-usage")

    with page.expect_download() as download:
        page.click("text=Export CSV")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    exported = next(r for r in rows if r["request_id"] == reply._request_id)
    assert exported["status"] == "success" and exported["model_served"] == "gpt-4o-mini"

    page.click("nav >> text=Billing")
    charge = page.locator("tr", has_text="Usage charge").first
    # The account is charged whole micro-USD, the rest carried to its next charge.
    micro = micro_to_usd(record.cost_pico // 10**6)
    charged = "$" + micro.rstrip("0").ljust(len(micro.split(".")[0]) + 3, "0")
    expect(charge).to_contain_text("-" + charged)
    expect(page.locator(".stat").first).to_contain_text(
        micro_to_usd(5_000_000 - record.cost_pico // 10**6).rstrip("0")
    )
    assert page.evaluate(SIDEWAYS) == []
    shot(page, "04-billing")

    page.click("nav >> text=Dashboard")
    expect(page.locator("canvas[data-chart]")).to_be_visible()
    assert page.evaluate(SIDEWAYS) == []
    shot(page, "05-dashboard")
    page.click("nav >> text=Models")
    expect(page.locator("td", has_text="o4-mini")).to_be_visible()
    assert page.evaluate(SIDEWAYS) == []
    shot(page, "06-models")
    page.click("nav >> text=API keys")
    assert page.evaluate(SIDEWAYS) == []
    shot(page, "06-keys")

    # A statement is of a month that has ended: move this account's postings into
    # the last one.
    last_month = (datetime.now(UTC).date().replace(day=1) - timedelta(days=1)).replace(day=1)
    backdate(
        Transaction.objects.filter(account=relay_env.account).values_list("pk", flat=True),
        datetime.combine(last_month, datetime.min.time(), UTC),
    )
    statement = statement_generate(account_id=relay_env.account.pk, period_start=last_month)
    page.goto(f"{base}/billing/statements/{statement.pk}/")
    expect(page.locator("h1")).to_contain_text("Statement")
    assert page.evaluate(SIDEWAYS) == []
    shot(page, "06-statement")

    on_a_phone(browser, base, record, cost, charged, statement)


def on_a_phone(browser, base, record, cost, charged, statement):
    """The same console 390 px wide: every page one tap away in the navigation, and
    no table that has to be scrolled sideways to see its amounts, status or actions."""
    narrow = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone = narrow.new_page()
    sign_in(phone, base, "dana", "pw-for-tests-1")
    expect(phone.locator("h1")).to_be_visible()
    nav = phone.locator("nav.nav a")
    assert nav.all_inner_texts() == ["Dashboard", "API keys", "Usage", "Billing", "Models"]
    for link in nav.all():
        assert on_screen(phone, link), link.inner_text()

    pages = [
        ("Dashboard", "/", "07-narrow-dashboard"),
        ("API keys", "/keys/", "09-narrow-keys"),
        ("Usage", "/usage/", "08-narrow-usage"),
        ("Billing", "/billing/", "11-narrow-billing"),
        ("Models", "/models/", "12-narrow-models"),
    ]
    for title, path, name in pages:
        phone.locator("nav.nav a", has_text=title).click()
        phone.wait_for_url(base + path)
        expect(phone.locator("nav.nav a.active")).to_have_text(title)
        assert phone.evaluate(SIDEWAYS) == [], path
        shot(phone, name)
        if path == "/usage/":
            row = phone.locator("tr", has_text=record.request_id)
            assert on_screen(phone, row.locator("td.num", has_text=cost))
            assert on_screen(phone, row.locator(".badge", has_text="success"))
            tokens = row.locator(".tokens")
            expect(tokens).to_contain_text("Cache read 2")
            expect(tokens).to_contain_text("Cache write 3")
            assert on_screen(phone, tokens)
        elif path == "/keys/":
            row = phone.locator("tr", has_text="browser key")
            assert on_screen(phone, row.locator(".badge", has_text="active"))
            assert on_screen(phone, row.get_by_role("link", name="Edit"))
            assert on_screen(phone, row.locator("button", has_text="Revoke"))
        elif path == "/billing/":
            charge = phone.locator("tr", has_text="Usage").first
            assert on_screen(phone, charge.locator("td.num", has_text="-" + charged))
            month = phone.locator("tr", has_text=statement.period_start.strftime("%B %Y"))
            assert on_screen(phone, month.locator("td.num").last)  # the closing balance

    key = ApiKey.objects.get(name="browser key")
    for path, name in [
        (f"/keys/{key.pk}/edit/", "13-narrow-key-edit"),
        (f"/billing/statements/{statement.pk}/", "14-narrow-statement"),
    ]:
        phone.goto(base + path)
        assert phone.evaluate(SIDEWAYS) == [], path
        shot(phone, name)
    assert on_screen(phone, phone.locator("tfoot th.num").first)  # the total charged
    narrow.close()


def test_staff_overview_page(relay_env, browser, upstream, django_user_model):
    django_user_model.objects.create_superuser("root", "root@example.com", "admin-pass-123")
    assert (
        relay_env.post(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        ).status_code
        == 200
    )
    wait_for(lambda: UsageRecord.objects.filter(settled_at__isnull=False).exists())
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{relay_env.url}/admin/login/?next=/admin/overview/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "admin-pass-123")
    page.click("input[type=submit]")
    expect(page.locator("h2").first).to_have_text("Last 30 days")
    health = page.locator("#channel-health")
    expect(health).to_contain_text(relay_env.channel.name)
    expect(health).to_contain_text("healthy")
    expect(page.locator("canvas[data-chart]")).to_be_visible()
    # The test channel has no cost prices: its margin is overstated, and said to be.
    expect(page.locator("#unpriced-channels")).to_contain_text(
        f"{relay_env.channel.name}: no cost price for gpt-4o-mini, o4-mini"
    )
    expect(page.locator("#margin-model")).to_contain_text("gpt-4o-mini")
    expect(page.locator("#margin-channel")).to_contain_text("Overstated")
    expect(page.locator("#margin-account")).to_contain_text(relay_env.account.name)
    shot(page, "10-admin-overview")


@pytest.mark.parametrize(
    ("path", "operation"),
    [("/api/docs/", ".opblock"), ("/api/redoc/", "[data-section-id^='tag/']")],
)
def test_the_api_documentation_renders_under_the_pages_security_policy(
    relay_env, browser, django_user_model, path, operation
):
    django_user_model.objects.create_superuser("root", "root@example.com", "admin-pass-123")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    blocked = []
    page.on(
        "console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None
    )
    page.goto(f"{relay_env.url}/admin/login/?next={path}")
    page.fill("#id_username", "root")
    page.fill("#id_password", "admin-pass-123")
    page.click("input[type=submit]")
    response = page.wait_for_load_state("networkidle")
    assert response is None
    # The operations are listed, not just a blank page with a 200.
    expect(page.locator(operation).first).to_be_visible(timeout=15_000)
    assert page.locator(operation).count() >= 10
    expect(page.get_by_text("/api/keys/").first).to_be_visible()
    assert not [m for m in blocked if "script" in m], blocked
    shot(page, f"11-api-{path.strip('/').replace('/', '-')}")
