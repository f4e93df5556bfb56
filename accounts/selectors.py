from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from core.localcache import TTLCache

from .models import Account, ApiKey


@dataclass(frozen=True, slots=True)
class AuthKey:
    """What the relay needs to know about a key, cached per process for a few seconds.

    Revocation, expiry, account suspension and the balance are re-checked by the
    database in the same statement that reserves the hold, so a stale entry here
    can never let a revoked key spend money."""

    id: int
    account_id: int
    price_group_id: int
    name: str
    active: bool
    account_active: bool
    expires_at: datetime | None
    allowed_models: frozenset[str]
    ip_allowlist: tuple[str, ...]
    rpm_limit: int | None
    tpm_limit: int | None
    concurrency_limit: int | None
    daily_spend_limit: int | None
    monthly_spend_limit: int | None
    account_concurrency_limit: int | None
    auto_strategy: str
    auto_models: tuple[str, ...]


_auth_cache: TTLCache[AuthKey | None] = TTLCache(
    "auth_keys", lambda: settings.TOLLGATE["AUTH_CACHE_TTL"]
)


def _auth_key_load(key_hash: str) -> AuthKey | None:
    row = (
        ApiKey.objects.filter(key_hash=key_hash)
        .values(
            "id",
            "account_id",
            "account__price_group_id",
            "account__status",
            "name",
            "status",
            "expires_at",
            "allowed_models",
            "ip_allowlist",
            "rpm_limit",
            "tpm_limit",
            "concurrency_limit",
            "daily_spend_limit",
            "monthly_spend_limit",
            "account__concurrency_limit",
            "account__auto_strategy",
            "account__auto_models",
        )
        .first()
    )
    if row is None:
        return None
    return AuthKey(
        id=row["id"],
        account_id=row["account_id"],
        price_group_id=row["account__price_group_id"],
        name=row["name"],
        active=row["status"] == ApiKey.Status.ACTIVE,
        account_active=row["account__status"] == Account.Status.ACTIVE,
        expires_at=row["expires_at"],
        allowed_models=frozenset(row["allowed_models"] or ()),
        ip_allowlist=tuple(row["ip_allowlist"] or ()),
        rpm_limit=row["rpm_limit"],
        tpm_limit=row["tpm_limit"],
        concurrency_limit=row["concurrency_limit"],
        daily_spend_limit=row["daily_spend_limit"],
        monthly_spend_limit=row["monthly_spend_limit"],
        account_concurrency_limit=row["account__concurrency_limit"],
        auto_strategy=row["account__auto_strategy"],
        auto_models=tuple(row["account__auto_models"] or ()),
    )


def auth_key_get(*, key_hash: str) -> AuthKey | None:
    return _auth_cache.get_or_load(key_hash, lambda: _auth_key_load(key_hash))


def auth_key_cached(*, key_hash: str) -> tuple[bool, AuthKey | None]:
    """(found, key) from this process's cache only; an unknown key is cached too."""
    return _auth_cache.lookup(key_hash)


def auth_cache_invalidate(*, key_hash: str | None = None) -> None:
    """The key (or, with no hash, any key or account) changed: every process reloads
    it."""
    _auth_cache.changed(key_hash)


def account_for_user(*, user) -> Account | None:
    membership = getattr(user, "membership", None)
    return membership.account if membership is not None else None
