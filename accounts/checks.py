"""Deployment checks (``manage.py check --deploy``, run by ``scripts/prod``)."""

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register


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
