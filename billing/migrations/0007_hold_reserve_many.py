"""Holds reserved in groups: one statement and one commit for the holds that
requests of one web process ask for together (``config.adb.GroupCommit``).

Each hold goes through ``tollgate_hold_reserve`` exactly as alone, in the order
given, and gets its own result; a refused hold changes nothing, so the others are
unaffected. The caller sorts a group by account and key, so that two groups lock
the rows they share in the same order."""

from django.db import migrations

RESERVE_MANY = """
CREATE OR REPLACE FUNCTION tollgate_hold_reserve_many(
    p_key_ids bigint[], p_account_ids bigint[], p_amounts bigint[], p_request_ids varchar[]
) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    v_results bigint[] := '{}';
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_key_ids, 1), 0) LOOP
        v_results := v_results || tollgate_hold_reserve(
            p_key_ids[i], p_account_ids[i], p_amounts[i], p_request_ids[i]
        );
    END LOOP;
    RETURN v_results;
END;
$$;
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(RESERVE_MANY)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "DROP FUNCTION IF EXISTS tollgate_hold_reserve_many(bigint[], bigint[], bigint[], varchar[])"
        )


class Migration(migrations.Migration):
    dependencies = [("billing", "0006_hold_reserve_async_commit")]

    operations = [migrations.RunPython(forward, backward)]
