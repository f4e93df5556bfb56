"""Two customer accounts (A with alice, B with bob), a member of staff and a user
with no account, each with a real API token."""

from dataclasses import dataclass
from decimal import Decimal

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import Account, ApiKey
from accounts.services import membership_add
from billing.models import PriceGroup
from tests.support.factories import (
    AccountFactory,
    ApiKeyFactory,
    ModelPriceFactory,
    PriceGroupFactory,
    UserFactory,
)
from usage.models import UsageRecord


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # Every test makes a few users; the production hasher is slow on purpose.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class World:
    group_a: PriceGroup
    group_b: PriceGroup
    a: Account
    b: Account
    key_a: ApiKey
    key_b: ApiKey
    alice: APIClient
    bob: APIClient
    staff: APIClient
    nobody: APIClient
    anon: APIClient
    alice_user: object
    bob_user: object
    staff_user: object


@pytest.fixture
def world(db) -> World:
    group_a = ModelPriceFactory(
        model="gpt-4o-mini", input_per_m=Decimal("0.15"), output_per_m=Decimal("0.60")
    ).group
    group_b = PriceGroupFactory(name="partners")
    ModelPriceFactory(group=group_b, model="o4-mini", input_per_m=Decimal("1.10"))
    a = AccountFactory(name="Acme", price_group=group_a, credit=5_000_000)
    b = AccountFactory(name="Globex", price_group=group_b, credit=7_000_000)
    alice_user = UserFactory(username="alice")
    bob_user = UserFactory(username="bob")
    staff_user = UserFactory(username="ops", is_staff=True)
    membership_add(account=a, user=alice_user)
    membership_add(account=b, user=bob_user)
    return World(
        group_a=group_a,
        group_b=group_b,
        a=a,
        b=b,
        key_a=ApiKeyFactory(account=a, name="alice's key"),
        key_b=ApiKeyFactory(account=b, name="bob's key"),
        alice=client_for(alice_user),
        bob=client_for(bob_user),
        staff=client_for(staff_user),
        nobody=client_for(UserFactory(username="drifter")),
        anon=client_for(None),
        alice_user=alice_user,
        bob_user=bob_user,
        staff_user=staff_user,
    )


def usage(key: ApiKey, **fields) -> UsageRecord:
    """A served request that charged nothing (no hold needed), for log and export tests."""
    values = {
        "request_id": "req",
        "model_requested": "gpt-4o-mini",
        "model_served": "gpt-4o-mini",
        "status": UsageRecord.Status.SUCCESS,
        "http_status": 200,
        "input_tokens": 10,
        "output_tokens": 5,
        **fields,
    }
    return UsageRecord.objects.create(account_id=key.account_id, api_key=key, **values)
