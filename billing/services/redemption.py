"""Redemption codes: made by staff, redeemed once for credit."""

import hashlib
import logging
import secrets
from datetime import datetime

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from accounts.models import Account
from billing.models import (
    LedgerAccount,
    RedemptionCode,
    Transaction,
)

from .ledger import LedgerError, customer_entry, ledger_post, system_entry

logger = logging.getLogger("tollgate.billing")


# -- redemption codes ----------------------------------------------------------------

_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


class RedemptionError(Exception):
    pass


def _code_normal(code: str) -> str:
    return code.upper().replace("-", "").replace(" ", "").removeprefix("TG")


def _code_hash(code: str) -> str:
    return hashlib.sha256(_code_normal(code).encode()).hexdigest()


def redemption_codes_create(
    *,
    amount: int,
    count: int = 1,
    memo: str = "",
    created_by: User | None = None,
    expires_at: datetime | None = None,
) -> list[str]:
    """Make ``count`` codes worth ``amount`` micro-USD each. The codes are returned
    once; only their hashes are kept."""
    if amount <= 0 or not 1 <= count <= 1000:
        raise LedgerError("a code must be worth something, and at most 1000 are made at once")
    codes = []
    for _ in range(count):
        body = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(16))
        code = "TG-" + "-".join(body[i : i + 4] for i in range(0, 16, 4))
        RedemptionCode.objects.create(
            code_hash=_code_hash(code),
            last4=body[-4:],
            amount=amount,
            memo=memo[:200],
            created_by=created_by,
            expires_at=expires_at,
        )
        codes.append(code)
    return codes


@transaction.atomic(durable=True)
def redemption_redeem(*, account: Account, code: str, user: User | None = None) -> Transaction:
    """Credit ``account`` with a code's value, once: the code row is locked and the
    posting's idempotency key is the code's, so two redemptions cannot both succeed."""
    row = RedemptionCode.objects.select_for_update().filter(code_hash=_code_hash(code)).first()
    if row is None:
        raise RedemptionError("This code is not valid.")
    if row.redeemed_at is not None:
        raise RedemptionError("This code has already been redeemed.")
    if row.expires_at is not None and row.expires_at <= timezone.now():
        raise RedemptionError("This code has expired.")
    txn = ledger_post(
        kind=Transaction.Kind.REDEMPTION,
        idempotency_key=f"redeem:{row.pk}",
        account_id=account.pk,
        memo=f"Redemption code …{row.last4}" + (f" ({row.memo})" if row.memo else ""),
        created_by=user,
        entries=[
            customer_entry(account.pk, row.amount),
            system_entry(LedgerAccount.Kind.REDEMPTION, -row.amount),
        ],
    )
    RedemptionCode.objects.filter(pk=row.pk).update(
        redeemed_by=account, redeemed_at=timezone.now(), transaction=txn
    )
    return txn
