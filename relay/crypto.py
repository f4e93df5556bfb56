"""Encryption at rest for upstream keys (Fernet: AES-128-CBC + HMAC-SHA256).

The key comes from ``TOLLGATE_ENCRYPTION_KEY`` (one or more comma-separated Fernet
keys, newest first, so keys can be rotated). Without it, a key is derived from
``SECRET_KEY``, which is good enough for the embedded default only.
"""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


@cache
def _fernet() -> MultiFernet:
    configured = [k.strip() for k in settings.TOLLGATE_ENCRYPTION_KEYS if k.strip()]
    if not configured:
        digest = hashlib.sha256(("tollgate-upstream-keys:" + settings.SECRET_KEY).encode()).digest()
        configured = [base64.urlsafe_b64encode(digest).decode()]
    return MultiFernet([Fernet(k.encode()) for k in configured])


def encrypt(plaintext: str) -> str:
    if not plaintext:
        return ""
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("upstream key cannot be decrypted with the configured keys") from exc
