"""The money kernel: exact integer amounts and token counts.

Amounts are integer micro-USD. Prices are stored as USD per 1M tokens with six
decimals; multiplied by 10**6 that is an integer number of micro-USD per 1M tokens,
which is also pico-USD per token. A request's cost is summed exactly in pico-USD
and rounded once to micro-USD.
"""

from dataclasses import dataclass
from decimal import Decimal

PICO_PER_MICRO = 1_000_000
# The largest amount a person may type (a billion dollars in micro-USD): far inside
# the ledger's 64-bit columns, so sums of many such amounts still fit.
AMOUNT_MAX = 10**15
# The largest count or limit stored in a PositiveIntegerField column.
COUNT_MAX = 2**31 - 1


def per_m_to_pico(value: Decimal | str | int | None) -> int:
    """USD per 1M tokens -> pico-USD per token (exact, or ValueError)."""
    if value is None:
        raise ValueError("price is missing")
    scaled = Decimal(value) * PICO_PER_MICRO
    if scaled != scaled.to_integral_value() or scaled < 0:
        raise ValueError(f"price {value} needs more than 6 decimals or is negative")
    return int(scaled)


def micro_to_usd(amount: int) -> str:
    """Micro-USD integer -> USD decimal string with six decimals (no float)."""
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def usd_to_micro(value: Decimal | str | int) -> int:
    scaled = Decimal(value) * 1_000_000
    if scaled != scaled.to_integral_value():
        raise ValueError("amounts have at most 6 decimals")
    return int(scaled)


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """Disjoint token kinds; each is billed once at its own price."""

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0

    @property
    def prompt(self) -> int:
        return self.input + self.cache_read + self.cache_write

    @property
    def completion(self) -> int:
        return self.output + self.reasoning

    @property
    def total(self) -> int:
        return self.prompt + self.completion
