"""The deployment checks that read the database (``check --deploy --database``,
run by ``scripts/prod``)."""

import pytest
from django.core.checks import Tags, run_checks
from django.db import connection

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's autovacuum"),
]


def deploy_database_messages():
    return run_checks(tags=[Tags.database], include_deployment_checks=True, databases=["default"])


def test_a_hot_table_left_out_of_autovacuum_is_named():
    assert "tollgate.W002" not in {m.id for m in deploy_database_messages()}
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE billing_hold SET (autovacuum_enabled = false)")
        cursor.execute("ALTER TABLE usage_usagerecord SET (autovacuum_enabled = false)")
    (warning,) = [m for m in deploy_database_messages() if m.id == "tollgate.W002"]
    assert warning.msg == "Autovacuum is disabled on billing_hold, usage_usagerecord (default)."
    assert "autovacuum_enabled" in warning.hint


def test_the_server_wide_setting_is_reported_as_the_server_has_it():
    with connection.cursor() as cursor:
        cursor.execute("SHOW autovacuum")
        (server,) = cursor.fetchone()
    warned = [m for m in deploy_database_messages() if m.id == "tollgate.W001"]
    assert len(warned) == (0 if server == "on" else 1)
    if warned:
        assert warned[0].msg == "PostgreSQL (default) runs with autovacuum off."


def test_the_checks_stay_quiet_without_a_database_to_look_at():
    messages = run_checks(tags=[Tags.database], include_deployment_checks=True)
    assert not [m for m in messages if m.id in {"tollgate.W001", "tollgate.W002"}]
