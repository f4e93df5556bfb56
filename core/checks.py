"""Deployment checks (``manage.py check --deploy``, run by ``scripts/prod``)."""

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register
from django.core.checks import Warning as CheckWarning
from django.db import connections


@register(Tags.security, deploy=True)
def production_secrets(app_configs, **kwargs) -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    if settings.SECRET_KEY == settings.EMBEDDED_SECRET_KEY:
        problems.append(
            Error(
                "SECRET_KEY is the embedded run's public default.",
                hint="Set SECRET_KEY to a long random value, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(50))'.",
                id="tollgate.E001",
            )
        )
    if not settings.TOLLGATE_ENCRYPTION_KEYS:
        problems.append(
            Error(
                "TOLLGATE_ENCRYPTION_KEY is not set: upstream keys would be encrypted with a "
                "key derived from SECRET_KEY, and rotating SECRET_KEY would lose them.",
                hint="Set TOLLGATE_ENCRYPTION_KEY to a Fernet key: python -c "
                "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'.",
                id="tollgate.E002",
            )
        )
    if settings.DEBUG:
        problems.append(Error("DEBUG is on.", id="tollgate.E003"))
    return problems


# The tables every relayed request updates.
HOT_TABLES = ("accounts_account", "billing_hold", "billing_keyspend", "usage_usagerecord")
VACUUM_HINT = (
    f"Every relayed request updates {', '.join(HOT_TABLES)}; without vacuum their dead "
    "rows pile up and each request costs PostgreSQL more the longer the gateway runs."
)


@register(Tags.database, deploy=True)
def postgres_autovacuum(app_configs, databases=None, **kwargs) -> list[CheckMessage]:
    """Warn when PostgreSQL will not vacuum the hot tables (run with ``--database``)."""
    problems: list[CheckMessage] = []
    for alias in databases or ():
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        with connection.cursor() as cursor:
            cursor.execute("SHOW autovacuum")
            (server,) = cursor.fetchone()
            cursor.execute(
                "SELECT relname FROM pg_class WHERE relname = ANY(%s) "
                "AND 'autovacuum_enabled=false' = ANY(reloptions) ORDER BY relname",
                [list(HOT_TABLES)],
            )
            tables = [name for (name,) in cursor.fetchall()]
        if server != "on":
            problems.append(
                CheckWarning(
                    f"PostgreSQL ({alias}) runs with autovacuum off.",
                    hint=VACUUM_HINT + " Set autovacuum = on in postgresql.conf.",
                    id="tollgate.W001",
                )
            )
        if tables:
            problems.append(
                CheckWarning(
                    f"Autovacuum is disabled on {', '.join(tables)} ({alias}).",
                    hint=VACUUM_HINT + " ALTER TABLE ... RESET (autovacuum_enabled).",
                    id="tollgate.W002",
                )
            )
    return problems
