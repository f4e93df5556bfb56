"""Exact pricing arithmetic.

Prices are stored as USD per 1M tokens with six decimals. Multiplied by 10**6 that is
an integer number of micro-USD per 1M tokens, which is also pico-USD per token. A
request's cost is summed exactly in pico-USD and rounded once to micro-USD:
half-up for a charge, up for a hold.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

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


@dataclass(frozen=True, slots=True)
class Price:
    """One price version in integer pico-USD per token; ``request_fee`` in micro-USD."""

    model: str
    input: int
    output: int
    cache_read: int
    cache_write: int
    reasoning: int
    request_fee: int = 0
    price_id: int | None = None
    mode: str = "chat"

    @classmethod
    def from_decimals(
        cls,
        *,
        model: str,
        input: Any,
        output: Any,
        cache_read: Any = None,
        cache_write: Any = None,
        reasoning: Any = None,
        request_fee: Any = 0,
        price_id: int | None = None,
        mode: str = "chat",
    ) -> "Price":
        inp = per_m_to_pico(input)
        out = per_m_to_pico(output)
        return cls(
            model=model,
            input=inp,
            output=out,
            cache_read=inp if cache_read is None else per_m_to_pico(cache_read),
            cache_write=inp if cache_write is None else per_m_to_pico(cache_write),
            reasoning=out if reasoning is None else per_m_to_pico(reasoning),
            request_fee=usd_to_micro(request_fee or 0),
            price_id=price_id,
            mode=mode,
        )

    def _pico(self, t: TokenCounts) -> int:
        return (
            t.input * self.input
            + t.cache_read * self.cache_read
            + t.cache_write * self.cache_write
            + t.output * self.output
            + t.reasoning * self.reasoning
        )

    def cost(self, tokens: TokenCounts) -> int:
        """Micro-USD charged for ``tokens``: rounded half-up once, plus the request fee."""
        return (self._pico(tokens) + PICO_PER_MICRO // 2) // PICO_PER_MICRO + self.request_fee

    def reserve(self, *, prompt_tokens: int, completion_tokens: int) -> int:
        """Micro-USD to hold: prompt at the input price, completion at the dearer of the
        output and reasoning prices, rounded up; never zero."""
        pico = prompt_tokens * max(self.input, self.cache_write) + completion_tokens * max(
            self.output, self.reasoning
        )
        return max(1, -(-pico // PICO_PER_MICRO) + self.request_fee)

    def snapshot(self) -> dict[str, Any]:
        """USD per 1M tokens as strings, as recorded on each usage record."""
        return {
            "price_id": self.price_id,
            "input": micro_to_usd(self.input),
            "output": micro_to_usd(self.output),
            "cache_read": micro_to_usd(self.cache_read),
            "cache_write": micro_to_usd(self.cache_write),
            "reasoning": micro_to_usd(self.reasoning),
            "request_fee": micro_to_usd(self.request_fee),
        }
