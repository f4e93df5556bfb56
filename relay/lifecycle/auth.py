"""Step 1: who is calling. The key comes from this process's cache (a thread and the
database on a miss); an unknown, revoked or expired key, or a suspended account, is
refused before anything else is read."""

from django.utils import timezone

from accounts.keys import key_hash, key_is_well_formed
from accounts.selectors import AuthKey, auth_key_cached, auth_key_get
from core.threads import db

from .. import errors
from ..errors import ApiError


def _key_hash_of(raw_key: str | None) -> str:
    if not raw_key:
        raise errors.invalid_api_key(
            "You didn't provide an API key. Send it as `Authorization: Bearer sk-...`."
        )
    if not key_is_well_formed(raw_key):
        raise errors.invalid_api_key()
    return key_hash(raw_key)


def authenticate(raw_key: str | None) -> AuthKey:
    return _key_checked(auth_key_get(key_hash=_key_hash_of(raw_key)))


async def authenticate_async(raw_key: str | None) -> AuthKey:
    """``authenticate`` on the event loop: the key comes from this process's cache, or
    from the database on a thread when it is not cached."""
    hashed = _key_hash_of(raw_key)
    found, key = auth_key_cached(key_hash=hashed)
    if not found:
        key = await db(auth_key_get)(key_hash=hashed)
    return _key_checked(key)


def _key_checked(key: AuthKey | None) -> AuthKey:
    if key is None or not key.active:
        raise errors.invalid_api_key()
    if key.expires_at is not None and key.expires_at <= timezone.now():
        raise errors.invalid_api_key("This API key has expired.")
    if not key.account_active:
        raise account_suspended()
    return key


def account_suspended() -> ApiError:
    return errors.permission_denied(
        "This account is suspended; contact the administrator.", "account_suspended"
    )
