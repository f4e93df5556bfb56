"""The Django admin as staff use it: lists, the one-time key secret, top-ups, read-only ledger."""

import re
from decimal import Decimal

import pytest

from accounts.models import ApiKey
from billing.models import Entry, Transaction
from tests.support.factories import AccountFactory, ApiKeyFactory, ChannelFactory, ModelPriceFactory
from tests.support.ledger import served

pytestmark = pytest.mark.django_db


@pytest.fixture
def account():
    return AccountFactory(name="Acme Corp", price_group=ModelPriceFactory().group, credit=3_000_000)


def test_lists_show_accounts_prices_channels_and_keys_without_secrets(admin_client, account):
    key = ApiKeyFactory(account=account, name="prod backend")
    channel = ChannelFactory(name="primary-openai", api_key="sk-upstream-very-secret-999")

    page = admin_client.get("/admin/accounts/account/").content.decode()
    assert "Acme Corp" in page and "$3.000000" in page

    page = admin_client.get("/admin/accounts/apikey/").content.decode()
    assert "prod backend" in page and key.prefix in page
    assert key.secret not in page and key.key_hash not in page
    page = admin_client.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()
    assert key.secret not in page and key.key_hash not in page

    assert "gpt-4o-mini" in admin_client.get("/admin/billing/modelprice/").content.decode()
    for url in ["/admin/relay/channel/", f"/admin/relay/channel/{channel.pk}/change/"]:
        page = admin_client.get(url).content.decode()
        assert "primary-openai" in page
        assert "sk-upstream-very-secret-999" not in page
        assert channel.api_key_encrypted not in page
    assert admin_client.get("/admin/usage/usagerecord/").status_code == 200


def test_key_created_in_admin_shows_its_secret_once(admin_client, account):
    response = admin_client.post(
        "/admin/accounts/apikey/add/",
        {"account": account.pk, "name": "from admin", "allowed_models": "[]", "ip_allowlist": "[]"},
        follow=True,
    )
    page = response.content.decode()
    key = ApiKey.objects.get(name="from admin")
    start = page.index("sk-tg-")
    secret = page[start : start + 44]
    from accounts.keys import key_hash

    assert key_hash(secret) == key.key_hash
    assert (
        secret not in admin_client.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()
    )


def test_top_up_from_admin_posts_to_the_ledger(admin_client, admin_user, account):
    response = admin_client.post(
        f"/admin/accounts/account/{account.pk}/credit/",
        {"amount_usd": "12.50", "kind": "topup", "memo": "invoice 1001"},
    )
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.balance == 15_500_000
    txn = Transaction.objects.get(memo="invoice 1001")
    assert txn.created_by == admin_user
    assert sum(txn.entries.values_list("amount", flat=True)) == 0


def test_invalid_top_up_is_shown_in_place_and_changes_nothing(admin_client, account):
    response = admin_client.post(
        f"/admin/accounts/account/{account.pk}/credit/",
        {"amount_usd": "-5", "kind": "topup", "memo": "oops"},
    )
    assert response.status_code == 200
    assert "A top-up must be positive" in response.content.decode()
    account.refresh_from_db()
    assert account.balance == 3_000_000


def test_balance_cannot_be_edited_by_hand(admin_client, account):
    admin_client.post(
        f"/admin/accounts/account/{account.pk}/change/",
        {
            "name": "Acme Corp",
            "status": "active",
            "price_group": account.price_group_id,
            "overdraft_limit": 0,
            "balance": 999_999_999,
            "memberships-TOTAL_FORMS": 0,
            "memberships-INITIAL_FORMS": 0,
        },
    )
    account.refresh_from_db()
    assert account.balance == 3_000_000


def test_ledger_is_read_only(admin_client, account):
    entry = Entry.objects.first()
    assert admin_client.get(f"/admin/billing/entry/{entry.pk}/change/").status_code == 200
    assert (
        admin_client.post(f"/admin/billing/entry/{entry.pk}/change/", {"amount": 1}).status_code
        == 403
    )
    assert admin_client.get("/admin/billing/entry/add/").status_code == 403
    assert (
        admin_client.post(f"/admin/billing/entry/{entry.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    entry.refresh_from_db()
    assert entry.amount == 3_000_000


def test_redemption_codes_made_in_admin_are_shown_once_and_redeem(admin_client, account):
    from billing.models import RedemptionCode
    from billing.services import redemption_redeem

    response = admin_client.post(
        "/admin/billing/redemptioncode/create/", {"amount_usd": "5", "count": "3", "memo": "launch"}
    )
    page = response.content.decode()
    codes = re.findall(r"TG-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", page)
    assert len(codes) == 3 and RedemptionCode.objects.count() == 3
    listing = admin_client.get("/admin/billing/redemptioncode/").content.decode()
    assert all(code not in listing for code in codes)
    redemption_redeem(account=account, code=codes[0])
    account.refresh_from_db()
    assert account.balance == 8_000_000


def test_adjustment_from_admin_records_the_reason_and_the_staff_member(
    admin_client, admin_user, account
):
    admin_client.post(
        f"/admin/accounts/account/{account.pk}/credit/",
        {"amount_usd": "-1.25", "kind": "adjustment", "memo": "duplicate top-up"},
    )
    txn = Transaction.objects.get(kind="adjustment")
    assert (txn.memo, txn.created_by) == ("duplicate top-up", admin_user)
    account.refresh_from_db()
    assert account.balance == 1_750_000


def _components(*rows: dict) -> dict:
    """The component rows of the price form's inline, as a browser posts them."""
    data = {
        "components-TOTAL_FORMS": str(len(rows)),
        "components-INITIAL_FORMS": "0",
        "components-MIN_NUM_FORMS": "0",
        "components-MAX_NUM_FORMS": "1000",
    }
    for i, row in enumerate(rows):
        full = {"above": "0", "size": "", "quality": "", "tool": "", "service_tier": "", **row}
        data.update({f"components-{i}-{k}": v for k, v in full.items()})
    return data


def test_new_price_version_from_admin(admin_client, account):
    from billing.models import ModelPrice
    from billing.selectors import price_current

    response = admin_client.post(
        "/admin/billing/modelprice/add/",
        {
            "group": account.price_group_id,
            "model": "gpt-4o-mini",
            "mode": "chat",  # the form's select, as a browser sends it
            **_components(
                {"unit": "input", "rate": "0.2"},
                {"unit": "output", "rate": "0.8"},
                {"unit": "tool_call", "rate": "10", "tool": "web_search"},
            ),
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert ModelPrice.objects.filter(model="gpt-4o-mini").count() == 2
    price = price_current(group_id=account.price_group_id, model="gpt-4o-mini")
    assert {c.unit: c.rate for c in price.components} == {
        "input": Decimal("0.2"),
        "output": Decimal("0.8"),
        "tool_call": Decimal("10"),
    }
    page = admin_client.get(f"/admin/billing/modelprice/{price.price_id}/change/")
    text = page.content.decode()
    assert "New version from this one" in text and "web_search" in text

    # A new version starts from the components of the one it is based on.
    form = admin_client.get(f"/admin/billing/modelprice/add/?from={price.price_id}")
    assert form.status_code == 200
    rows = form.context["inline_admin_formsets"][0].formset.forms
    assert [(f.initial["unit"], f.initial["tool"]) for f in rows] == [
        ("input", ""),
        ("output", ""),
        ("tool_call", "web_search"),
    ]


@pytest.mark.parametrize(
    "rows",
    [
        [{"unit": "input", "rate": "0.0000001"}],
        [{"unit": "input", "rate": "1", "size": "1024x1024"}],
        [{"unit": "input", "rate": "1"}, {"unit": "input", "rate": "2"}],
        [],
    ],
)
def test_a_price_the_admin_cannot_bill_exactly_is_refused(admin_client, account, rows):
    from billing.models import ModelPrice

    response = admin_client.post(
        "/admin/billing/modelprice/add/",
        {
            "group": account.price_group_id,
            "model": "new-model",
            "mode": "chat",
            **_components(*rows),
        },
    )
    assert response.status_code == 200  # the form again, with the error
    assert not ModelPrice.objects.filter(model="new-model").exists()


def test_admin_lists_show_money_in_usd(admin_client, account):
    key = ApiKeyFactory(account=account, name="capped", daily_spend_limit=1_500_000)
    channel = ChannelFactory(name="unpriced", served_models=["gpt-4o-mini"])
    served(key=key, cost=2_000, upstream_cost=1_500, channel=channel, model="gpt-4o-mini")

    # Each transaction with what it did to the customer's balance.
    ledger = admin_client.get("/admin/billing/transaction/").content.decode()
    assert "Customer balance change" in ledger
    assert "$3.000000" in ledger and "-$0.002000" in ledger
    usage = admin_client.get("/admin/usage/usagerecord/").content.decode()
    assert "Upstream cost" in usage and "$0.002000" in usage and "$0.001500" in usage
    assert "$1.500000 per day" in admin_client.get("/admin/accounts/apikey/").content.decode()
    assert "$0.001000" in admin_client.get("/admin/billing/hold/").content.decode()
    accounts = admin_client.get("/admin/accounts/account/").content.decode()
    assert "$2.998000" in accounts and "2998000" not in accounts


def test_channels_without_cost_prices_are_flagged(admin_client, account):
    ChannelFactory(
        name="half-priced",
        served_models=["gpt-4o-mini", "o4-mini"],
        cost_prices={"gpt-4o-mini": {"input": "0.1", "output": "0.4"}},
    )
    ChannelFactory(name="priced", cost_prices={"gpt-4o-mini": {"input": "0.1", "output": "0.4"}})
    ChannelFactory(name="demo", type="mock", served_models=["gpt-4o-mini"])

    listing = admin_client.get("/admin/relay/channel/").content.decode()
    assert listing.count("margin overstated") == 1
    assert "Missing for o4-mini: margin overstated" in listing
    overview = admin_client.get("/admin/overview/").content.decode()
    assert "Margin is overstated for 1 channel." in overview
    assert "half-priced</a>: no cost price for o4-mini" in overview


def test_overview_shows_margin_per_model_channel_and_account(admin_client, account):
    other = AccountFactory(name="Globex", price_group=account.price_group, credit=1_000_000)
    cheap = ChannelFactory(name="cheap", served_models=["m1", "m2"])
    dear = ChannelFactory(name="dear", served_models=["m1"])
    acme, globex = ApiKeyFactory(account=account), ApiKeyFactory(account=other)
    served(key=acme, cost=1_000, upstream_cost=600, model="m1", channel=cheap, request_id="1")
    served(key=acme, cost=500, upstream_cost=100, model="m2", channel=cheap, request_id="2")
    served(key=globex, cost=2_000, upstream_cost=2_100, model="m1", channel=dear, request_id="3")

    page = admin_client.get("/admin/overview/").content.decode()

    def table(name: str) -> list[list[str]]:
        body = re.search(rf'<table id="{name}"[^>]*>(.*?)</table>', page, re.S).group(1)
        rows = re.findall(r"<tr>(.*?)</tr>", body.split("<tbody>")[1], re.S)
        return [
            [re.sub(r"<[^>]+>|\s+", " ", cell).split("Overstated")[0].strip() for cell in cells]
            for cells in (re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows)
        ]

    assert table("margin-model") == [
        ["m1", "$0.003", "$0.0027", "$0.0003"],
        ["m2", "$0.0005", "$0.0001", "$0.0004"],
    ]
    assert table("margin-channel") == [
        ["dear", "$0.002", "$0.0021", "-$0.0001"],
        ["cheap", "$0.0015", "$0.0007", "$0.0008"],
    ]
    assert table("margin-account") == [
        ["Globex", "$0.002", "$0.0021", "-$0.0001"],
        ["Acme Corp", "$0.0015", "$0.0007", "$0.0008"],
    ]
    # Today's row: requests from the usage records, money from the same ledger.
    assert table("per-day")[0][1:] == ["3", "0", "$0.0035", "$0.0028", "$0.0007"]
