from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from .keys import DISPLAY_PREFIX_LEN, key_generate, key_hash
from .models import Account, ApiKey, Membership
from .selectors import auth_cache_invalidate

if TYPE_CHECKING:
    from billing.models import PriceGroup


@transaction.atomic
def account_create(
    *, name: str, price_group: "PriceGroup", overdraft_limit: int | None = None
) -> Account:
    """An account; billing opens its customer ledger account in the same transaction
    (``billing.services.ledger.ledger_account_open``, on the account's post_save)."""
    if overdraft_limit is None:
        overdraft_limit = settings.TOLLGATE["DEFAULT_OVERDRAFT"]
    return Account.objects.create(
        name=name, price_group=price_group, overdraft_limit=overdraft_limit
    )


def membership_add(
    *, account: Account, user: User, role: str = Membership.Role.MEMBER
) -> Membership:
    return Membership.objects.create(account=account, user=user, role=role)


class KeyPolicyError(ValueError):
    """A key's policy that cannot work; ``errors`` names each field and why."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def api_key_policy_check(
    account: Account, *, expires_at: datetime | None, allowed_models: list[str] | None
) -> None:
    errors = {}
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = "This expiry is in the past: the key would never work."
    if allowed_models:
        # Through the account's price group, any version (a scheduled price counts).
        priced = set(account.price_group.prices.values_list("model", flat=True))
        unknown = sorted(set(allowed_models) - priced)
        if unknown:
            errors["allowed_models"] = (
                f"Not priced for this account, so never usable: {', '.join(unknown)}."
            )
    if errors:
        raise KeyPolicyError(errors)


def api_key_create(
    *,
    account: Account,
    name: str,
    created_by: User | None = None,
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
    ip_allowlist: list[str] | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    concurrency_limit: int | None = None,
    daily_spend_limit: int | None = None,
    monthly_spend_limit: int | None = None,
) -> tuple[ApiKey, str]:
    """Create a key. Returns the row and the secret, which is never stored or shown again.
    Raises KeyPolicyError for an expiry in the past or a model the account cannot use."""
    api_key_policy_check(account, expires_at=expires_at, allowed_models=allowed_models)
    secret = key_generate()
    api_key = ApiKey.objects.create(
        account=account,
        name=name,
        prefix=secret[:DISPLAY_PREFIX_LEN],
        last4=secret[-4:],
        key_hash=key_hash(secret),
        created_by=created_by,
        expires_at=expires_at,
        allowed_models=sorted(set(allowed_models or [])),
        ip_allowlist=list(ip_allowlist or []),
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        concurrency_limit=concurrency_limit,
        daily_spend_limit=daily_spend_limit,
        monthly_spend_limit=monthly_spend_limit,
    )
    auth_cache_invalidate(key_hash=api_key.key_hash)
    return api_key, secret


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke a key. Takes effect at once: the hold reservation re-checks the status."""
    ApiKey.objects.filter(pk=api_key.pk, status=ApiKey.Status.ACTIVE).update(
        status=ApiKey.Status.REVOKED, revoked_at=timezone.now()
    )
    api_key.refresh_from_db()
    auth_cache_invalidate(key_hash=api_key.key_hash)
    return api_key


_KEY_EDITABLE = frozenset(
    {
        "name",
        "expires_at",
        "allowed_models",
        "ip_allowlist",
        "rpm_limit",
        "tpm_limit",
        "concurrency_limit",
        "daily_spend_limit",
        "monthly_spend_limit",
    }
)


def api_key_update(*, api_key: ApiKey, fields: list[str]) -> ApiKey:
    """Save the named policy fields of ``api_key`` (already set on the instance).
    Raises KeyPolicyError for a new expiry in the past or a model the account cannot
    use (fields not being changed are not judged)."""
    unknown = set(fields) - _KEY_EDITABLE
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    api_key_policy_check(
        api_key.account,
        expires_at=api_key.expires_at if "expires_at" in fields else None,
        allowed_models=api_key.allowed_models if "allowed_models" in fields else None,
    )
    if fields:
        api_key.save(update_fields=list(fields))
    auth_cache_invalidate(key_hash=api_key.key_hash)
    return api_key


def account_low_balance_set(*, account: Account, threshold: int | None) -> Account:
    """Set (or clear) the balance below which the members get one email.

    A balance already below the new threshold counts as already told (the console
    shows it); the alert fires the next time the balance crosses it downwards."""
    if threshold is not None and threshold < 0:
        raise ValueError("the threshold cannot be negative")
    with transaction.atomic():
        locked = Account.objects.select_for_update().get(pk=account.pk)
        locked.low_balance_threshold = threshold
        locked.low_balance_alerted = threshold is not None and locked.balance < threshold
        locked.save(update_fields=["low_balance_threshold", "low_balance_alerted"])
    account.refresh_from_db()
    return account


# What staff may change on an account directly; balance and held move only with
# the ledger, the low-balance threshold through account_low_balance_set.
ACCOUNT_SETTINGS = frozenset(
    {
        "name",
        "status",
        "price_group",
        "overdraft_limit",
        "concurrency_limit",
        "auto_strategy",
        "auto_models",
    }
)


def account_update(*, account: Account, values: dict[str, Any]) -> Account:
    """Save the given settings columns only: ``balance`` and ``held`` on the instance
    may be stale, and they are never written here. Raises ValueError when the
    account is already further below zero than a new overdraft limit allows."""
    unknown = set(values) - ACCOUNT_SETTINGS - {"low_balance_threshold"}
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    values = dict(values)
    threshold_given = "low_balance_threshold" in values
    threshold = values.pop("low_balance_threshold", None)
    for name, value in values.items():
        setattr(account, name, value)
    try:
        with transaction.atomic():
            if values:
                account.save(update_fields=list(values))
            if threshold_given:
                account_low_balance_set(account=account, threshold=threshold)
    except IntegrityError as exc:
        raise ValueError("The balance is already further below zero than this overdraft.") from exc
    # Status, price group and limits are cached with each key on the relay.
    auth_cache_invalidate()
    account.refresh_from_db()
    return account
