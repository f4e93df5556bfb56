"""The management API against its own OpenAPI schema (schemathesis).

Every operation is called with generated parameters and bodies, once with a staff
token and once with a customer's: no answer is a server error, documented answers
match the schema, and the only money that moves is what the explicit credit
endpoints post (top-ups, adjustments, redemptions); the ledger still reconciles.
"""

from datetime import date

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from accounts.models import Account
from billing.models import ModelPrice, RedemptionCode, Transaction
from billing.reconcile import ledger_check
from billing.services import redemption_codes_create
from billing.statements import statement_generate
from config.wsgi import application
from tests.support.api import usage
from tests.support.factories import ChannelFactory

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
# Transactions the API may post: the credit endpoints and redemption codes.
CREDIT_KINDS = {
    Transaction.Kind.TOPUP,
    Transaction.Kind.ADJUSTMENT,
    Transaction.Kind.REDEMPTION,
}


@pytest.fixture(autouse=True)
def _keep_the_test_transaction():
    """The app is called in-process inside the test's transaction; as Django's test
    client does, requests must not close the connection that holds it."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def existing(world):
    """Ids of real objects, so generated paths reach detail views, not only 404s."""
    record = usage(world.key_a, request_id="schema-1")
    redemption_codes_create(amount=1_000, count=1, created_by=world.staff_user)
    statement = statement_generate(account_id=world.a.pk, period_start=date(2020, 1, 1))
    ids = {
        "accounts": world.a.pk,
        "keys": world.key_a.pk,
        "price-groups": world.group_a.pk,
        "prices": ModelPrice.objects.filter(group=world.group_a).values_list("pk", flat=True)[0],
        "channels": ChannelFactory().pk,
        "redemption-codes": RedemptionCode.objects.values_list("pk", flat=True)[0],
        "usage": record.pk,
        "ledger": Transaction.objects.filter(account=world.a).values_list("pk", flat=True)[0],
        "statements": statement.pk,
        "member_id": world.a.memberships.get().pk,
    }
    return ids


def _aim_at_real_objects(case, ids) -> None:
    """Half of the generated ids (the even ones) are swapped for a real object's."""
    params = case.path_parameters or {}
    resource = case.path.split("/")[2]
    for name, value in list(params.items()):
        if isinstance(value, int) and value % 2 == 0:
            params[name] = ids["member_id"] if name == "member_id" else ids[resource]


schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
# The coverage phase's boundary cases run to hundreds per operation; random generation
# within the budget below keeps the whole file under a minute and a half.
schema.config.phases.coverage.enabled = False


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_the_management_api_never_fails_and_moves_no_money(case, world, existing):
    before = set(Transaction.objects.values_list("pk", flat=True))
    balances = dict(Account.objects.values_list("pk", "balance"))
    _aim_at_real_objects(case, existing)

    for client in (world.staff, world.alice):
        token = client._credentials["HTTP_AUTHORIZATION"]
        case.call_and_validate(headers={"Authorization": token}, checks=CHECKS)

    assert ledger_check() == []
    new = Transaction.objects.exclude(pk__in=before)
    assert {t.kind for t in new} <= CREDIT_KINDS
    if not new.exists():
        after = Account.objects.filter(pk__in=balances).values_list("pk", "balance")
        assert dict(after) == balances
