"""The management API as its tests see it: the ``World`` the ``world`` fixture gives a
test (two customer accounts, A with alice and B with bob, a member of staff and a user
with no account, each with a real API token), ``client_for()`` a user and ``usage()``
records for the logs and exports."""

from dataclasses import dataclass

from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import Account, ApiKey
from billing.models import PriceGroup
from usage.models import UsageRecord


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


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
