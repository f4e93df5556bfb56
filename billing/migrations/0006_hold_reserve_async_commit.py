"""The hold's commit does not wait for its WAL flush.

A hold is a reservation, not money: what protects against overdraft is that a
committed hold is visible to every other request at once, and an asynchronous
commit is visible at once like any other. Durability comes with the request's usage
record, whose synchronous commit flushes the WAL up to and past the hold's. If the
database crashes in between, the hold and the request are lost together, which
charges nobody. This halves the WAL flushes a relay request waits for."""

import importlib

from django.db import migrations

_0003 = importlib.import_module("billing.migrations.0003_hold_reserve_function")
_FIRST_STATEMENT = "BEGIN\n    SELECT status, expires_at"
ASYNC_RESERVE = _0003.RESERVE.replace(
    _FIRST_STATEMENT,
    "BEGIN\n    PERFORM set_config('synchronous_commit', 'off', true);\n    SELECT status, expires_at",
    1,
)
assert ASYNC_RESERVE != _0003.RESERVE


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ASYNC_RESERVE)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_0003.RESERVE)


class Migration(migrations.Migration):
    dependencies = [("billing", "0005_ledger_guards")]

    operations = [migrations.RunPython(forward, backward)]
