"""Exact pricing arithmetic.

Prices are stored as USD per 1M tokens with six decimals. Multiplied by 10**6 that is
an integer number of micro-USD per 1M tokens, which is also pico-USD per token. A
request's cost is summed exactly in pico-USD and rounded once to micro-USD:
half-up for a charge, up for a hold.
"""

from dataclasses import dataclass
from typing import Any

from core.money import PICO_PER_MICRO, TokenCounts, micro_to_usd, per_m_to_pico, usd_to_micro


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
