"""API key format: ``sk-tg-`` + 32 random base62 characters + a 6-character checksum.

The checksum (CRC32 of the random part, base62) lets the relay refuse mistyped or
made-up keys without touching the database. Only the SHA-256 of the whole key is
stored; the key itself is shown once, when it is created.
"""

import hashlib
import secrets
import string
import zlib

KEY_PREFIX = "sk-tg-"
_ALPHABET = string.digits + string.ascii_letters
_BODY_LEN = 32
_CHECKSUM_LEN = 6
KEY_LEN = len(KEY_PREFIX) + _BODY_LEN + _CHECKSUM_LEN
# How much of the key is kept in clear to let people recognise it.
DISPLAY_PREFIX_LEN = len(KEY_PREFIX) + 6
_ALPHABET_SET = frozenset(_ALPHABET)


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECKSUM_LEN)


def key_generate() -> str:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LEN))
    return f"{KEY_PREFIX}{body}{_checksum(body)}"


def key_is_well_formed(key: str) -> bool:
    """True when ``key`` has our shape and a valid checksum (no database involved)."""
    if len(key) != KEY_LEN or not key.startswith(KEY_PREFIX):
        return False
    rest = key[len(KEY_PREFIX) :]
    if not _ALPHABET_SET.issuperset(rest):
        return False
    body, checksum = rest[:_BODY_LEN], rest[_BODY_LEN:]
    return secrets.compare_digest(_checksum(body), checksum)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def key_display(prefix: str, last4: str) -> str:
    return f"{prefix}…{last4}"
