"""The money kernel: exact integer amounts and the units a request is billed for.

Amounts in the ledger are integer micro-USD. A request's cost is summed exactly in
pico-USD (10**-12 USD) from its price's components; the ledger charges each account
whole micro-USD and carries the part below one micro-USD to its next settlement
(``billing.services.settlement``), so what an account is charged over any period is
the exact sum of its requests to within one micro-USD.
"""

from dataclasses import dataclass
from decimal import Decimal

PICO_PER_MICRO = 1_000_000
PICO_PER_USD = 10**12
# The largest amount a person may type (a billion dollars in micro-USD): far inside
# the ledger's 64-bit columns, so sums of many such amounts still fit.
AMOUNT_MAX = 10**15
# The largest count or limit stored in a PositiveIntegerField column.
COUNT_MAX = 2**31 - 1


def micro_to_usd(amount: int) -> str:
    """Micro-USD integer -> USD decimal string with six decimals (no float)."""
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def pico_to_usd(amount: int) -> str:
    """Pico-USD integer -> exact USD decimal string: six decimals, more only where
    the amount has them ("0.000123", "0.0000001")."""
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), PICO_PER_USD)
    digits = f"{frac:012d}"
    keep = max(6, len(digits.rstrip("0")))
    return f"{sign}{whole}.{digits[:keep]}"


def usd_to_micro(value: Decimal | str | int) -> int:
    scaled = Decimal(value) * 1_000_000
    if scaled != scaled.to_integral_value():
        raise ValueError("amounts have at most 6 decimals")
    return int(scaled)


def pico_to_micro(pico: int) -> int:
    """Rounded half-up to the micro-USD (for showing one amount; the ledger carries
    the remainder instead)."""
    return (pico + PICO_PER_MICRO // 2) // PICO_PER_MICRO


def pico_to_micro_up(pico: int) -> int:
    """Rounded up to the micro-USD (holds never fall short)."""
    return -(-pico // PICO_PER_MICRO)


@dataclass(frozen=True, slots=True)
class Units:
    """What one request is billed for, each unit counted once.

    Token kinds are disjoint: ``input`` is the prompt's uncached text tokens, apart
    from cache reads, cache writes (``cache_write`` for five minutes, the default;
    ``cache_write_1h`` for an hour), audio and image tokens; ``output`` is the
    completion's text tokens apart from reasoning, audio and image tokens. The other
    units: images by (size, quality), milliseconds of audio, characters of speech
    input, search units and hosted-tool calls by tool type. ``service_tier`` is the
    tier the upstream served the request in (a price may depend on it)."""

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    output: int = 0
    reasoning: int = 0
    audio_input: int = 0
    audio_output: int = 0
    image_input: int = 0
    image_output: int = 0
    # ((size, quality, count), ...), sorted
    images: tuple[tuple[str, str, int], ...] = ()
    audio_ms: int = 0
    characters: int = 0
    search_units: int = 0
    # ((tool type, count), ...), sorted
    tool_calls: tuple[tuple[str, int], ...] = ()
    service_tier: str = ""

    @property
    def prompt(self) -> int:
        """Every prompt token, of any kind."""
        return (
            self.input
            + self.cache_read
            + self.cache_write
            + self.cache_write_1h
            + self.audio_input
            + self.image_input
        )

    @property
    def completion(self) -> int:
        """Every completion token, of any kind."""
        return self.output + self.reasoning + self.audio_output + self.image_output

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    @property
    def image_count(self) -> int:
        return sum(n for _, _, n in self.images)

    @property
    def tool_call_count(self) -> int:
        return sum(n for _, n in self.tool_calls)


def images_of(counts: dict[tuple[str, str], int]) -> tuple[tuple[str, str, int], ...]:
    """``Units.images`` from counts by (size, quality)."""
    return tuple(sorted((s, q, n) for (s, q), n in counts.items() if n > 0))


def tool_calls_of(counts: dict[str, int]) -> tuple[tuple[str, int], ...]:
    """``Units.tool_calls`` from counts by tool type."""
    return tuple(sorted((t, n) for t, n in counts.items() if n > 0))
