"""Every write that moves money, by aggregate: the ledger (postings, credits,
adjustments), holds, settlement, redemption codes and prices. Amounts are integer
micro-USD; each top-level action is one durable transaction."""

from .holds import (
    HoldRefused,
    SpendDeltas,
    hold_granted,
    hold_reserve,
    hold_reserve_async,
    hold_reserve_start,
    holds_expire,
    keyspend_apply,
    utc_periods,
)
from .ledger import (
    EntrySpec,
    LedgerError,
    account_adjust,
    account_credit,
    customer_entry,
    ledger_account_customer_id,
    ledger_account_system_id,
    ledger_post,
    system_entry,
)
from .prices import components_checked, model_price_set, price_group_multiplier_set
from .redemption import RedemptionError, redemption_codes_create, redemption_redeem
from .settlement import settlement_run

__all__ = [
    "EntrySpec",
    "HoldRefused",
    "LedgerError",
    "RedemptionError",
    "SpendDeltas",
    "account_adjust",
    "account_credit",
    "components_checked",
    "customer_entry",
    "hold_granted",
    "hold_reserve",
    "hold_reserve_async",
    "hold_reserve_start",
    "holds_expire",
    "keyspend_apply",
    "ledger_account_customer_id",
    "ledger_account_system_id",
    "ledger_post",
    "model_price_set",
    "price_group_multiplier_set",
    "redemption_codes_create",
    "redemption_redeem",
    "settlement_run",
    "system_entry",
    "utc_periods",
]
