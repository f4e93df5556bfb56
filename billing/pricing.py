"""Prices as components, and the exact arithmetic of a bill.

A price version is a set of components, each "unit x rate" with optional
conditions. The rate is USD per the unit's quantum (1M tokens, one request, one
image, one second of audio, 1M characters, one search unit, 1,000 tool calls). The
conditions:

- ``above``: a context tier. The component applies when the request's prompt (all
  its tokens, cached ones included) is above this many tokens; for that request it
  replaces the rate of the same unit at a lower tier.
- ``size`` and ``quality`` (images), ``tool`` (tool calls): what the unit is of.
- ``service_tier``: the tier the upstream served the request in ("flex", ...).

For each unit a request uses, the most specific component that applies wins:
a matching service tier first, then the highest tier the prompt is above, then a
matching size, quality or tool. Components are unique by (unit, conditions), so the
choice never depends on their order. A token kind with no component of its own is
billed at the rate of the kind it falls back to (``FALLBACK``: cache reads and
writes, audio and image input at the input rate; reasoning, audio and image output
at the output rate; one-hour cache writes at the five-minute rate). A unit with no
component at all is not billed.

Each rate is an exact integer number of pico-USD per the unit's smallest quantity
(a token, a millisecond of audio, a character, a call...), so a bill is an exact
integer sum. The group's multiplier applies to the whole sum, rounded once to the
pico-USD, half-up. Holds are sized from the same components (the dearest rate the
request can reach) and rounded up to the micro-USD.
"""

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from core.money import PICO_PER_MICRO, PICO_PER_USD, Units, pico_to_usd


@dataclass(frozen=True, slots=True)
class Unit:
    """A billed unit: its name (stored on components), how people call it, the
    quantity its rate is for and how many of the smallest counted quantity that is."""

    name: str
    label: str
    per: str
    # Smallest counted quantities per rate quantum (tokens per 1M tokens, ms per s).
    quanta: int
    # "prompt" and "completion" token kinds; "other" units.
    group: str

    @property
    def decimals(self) -> int:
        """The most decimals a rate may have to be exact to the pico-USD."""
        return 12 - (len(str(self.quanta)) - 1)


_TOKENS = 10**6
UNITS: dict[str, Unit] = {
    u.name: u
    for u in (
        Unit("input", "Input tokens", "1M tokens", _TOKENS, "prompt"),
        Unit("cache_read", "Cache read tokens", "1M tokens", _TOKENS, "prompt"),
        Unit("cache_write", "Cache write tokens (5 minutes)", "1M tokens", _TOKENS, "prompt"),
        Unit("cache_write_1h", "Cache write tokens (1 hour)", "1M tokens", _TOKENS, "prompt"),
        Unit("audio_input", "Audio input tokens", "1M tokens", _TOKENS, "prompt"),
        Unit("image_input", "Image input tokens", "1M tokens", _TOKENS, "prompt"),
        Unit("output", "Output tokens", "1M tokens", _TOKENS, "completion"),
        Unit("reasoning", "Reasoning tokens", "1M tokens", _TOKENS, "completion"),
        Unit("audio_output", "Audio output tokens", "1M tokens", _TOKENS, "completion"),
        Unit("image_output", "Image output tokens", "1M tokens", _TOKENS, "completion"),
        Unit("request", "Requests", "request", 1, "other"),
        Unit("image", "Images", "image", 1, "other"),
        Unit("audio_second", "Audio", "second", 1000, "other"),
        Unit("character", "Characters", "1M characters", _TOKENS, "other"),
        Unit("search_unit", "Search units", "search unit", 1, "other"),
        Unit("tool_call", "Tool calls", "1K calls", 1000, "other"),
    )
}
UNIT_CHOICES = [(u.name, u.label) for u in UNITS.values()]
PROMPT_UNITS = tuple(n for n, u in UNITS.items() if u.group == "prompt")
COMPLETION_UNITS = tuple(n for n, u in UNITS.items() if u.group == "completion")

# A token kind with no rate of its own is billed at this kind's rate.
FALLBACK = {
    "cache_read": "input",
    "cache_write": "input",
    "cache_write_1h": "cache_write",
    "audio_input": "input",
    "image_input": "input",
    "reasoning": "output",
    "audio_output": "output",
    "image_output": "output",
}

# The token kinds of ``Units`` and the unit each is billed as.
TOKEN_FIELDS = {
    "input": "input",
    "cache_read": "cache_read",
    "cache_write": "cache_write",
    "cache_write_1h": "cache_write_1h",
    "audio_input": "audio_input",
    "image_input": "image_input",
    "output": "output",
    "reasoning": "reasoning",
    "audio_output": "audio_output",
    "image_output": "image_output",
}


class PriceError(ValueError):
    """A component that cannot be priced exactly (``field`` names what is wrong)."""

    def __init__(self, message: str, field: str = "rate") -> None:
        super().__init__(message)
        self.field = field


def rate_pico(unit: str, rate: Decimal | str | int | float) -> int:
    """Pico-USD per smallest quantity of ``unit`` for a rate in USD per its quantum;
    exact, or PriceError."""
    spec = UNITS.get(unit)
    if spec is None:
        raise PriceError(f"unknown unit `{unit}`", "unit")
    try:
        value = Decimal(str(rate)) if isinstance(rate, float) else Decimal(rate)
    except (InvalidOperation, TypeError, ValueError):
        raise PriceError(f"`{rate}` is not a decimal number") from None
    if not value.is_finite() or value < 0:
        raise PriceError("a rate is a number of USD, zero or more")
    scaled = value * PICO_PER_USD / spec.quanta
    if scaled != scaled.to_integral_value():
        raise PriceError(
            f"a rate per {spec.per} has at most {spec.decimals} decimals (got {value})"
        )
    return int(scaled)


@dataclass(frozen=True, slots=True)
class Component:
    """One "unit x rate" line of a price, with its conditions."""

    unit: str
    rate: Decimal
    pico: int
    above: int = 0
    size: str = ""
    quality: str = ""
    tool: str = ""
    service_tier: str = ""
    # ``describe()``, made once: every billed request's snapshot names its components.
    shown: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "shown",
            {
                "unit": self.unit,
                "rate": decimal_text(self.rate),
                "per": UNITS[self.unit].per,
                **self.conditions(),
            },
        )

    @classmethod
    def of(
        cls,
        unit: str,
        rate: Decimal | str | int | float,
        *,
        above: int | None = 0,
        size: str | None = "",
        quality: str | None = "",
        tool: str | None = "",
        service_tier: str | None = "",
    ) -> "Component":
        """A checked component; PriceError names the field that is wrong."""
        pico = rate_pico(unit, rate)
        above = above or 0
        if not isinstance(above, int) or isinstance(above, bool) or above < 0:
            raise PriceError("`above` is a number of prompt tokens, zero or more", "above")
        size, quality, tool, tier = size or "", quality or "", tool or "", service_tier or ""
        if (size or quality) and unit != "image":
            raise PriceError("only an image component has a size or a quality", "size")
        if tool and unit != "tool_call":
            raise PriceError("only a tool-call component names a tool", "tool")
        return cls(
            unit=unit,
            rate=Decimal(str(rate)) if isinstance(rate, float) else Decimal(rate),
            pico=pico,
            above=above,
            size=size,
            quality=quality,
            tool=tool,
            service_tier=tier,
        )

    @property
    def key(self) -> tuple[str, int, str, str, str, str]:
        """What makes a component unique within a price version."""
        return (self.unit, self.above, self.size, self.quality, self.tool, self.service_tier)

    @property
    def rank(self) -> tuple[bool, int, bool, bool, bool]:
        """Higher wins among the components of a unit that apply."""
        return (
            bool(self.service_tier),
            self.above,
            bool(self.size),
            bool(self.quality),
            bool(self.tool),
        )

    def applies(
        self, prompt: int, tier: str, size: str = "", quality: str = "", tool: str = ""
    ) -> bool:
        return (
            (self.above == 0 or prompt > self.above)
            and (not self.service_tier or self.service_tier == tier)
            and (not self.size or self.size == size)
            and (not self.quality or self.quality == quality)
            and (not self.tool or self.tool == tool)
        )

    def conditions(self) -> dict[str, Any]:
        """The conditions that are set."""
        out: dict[str, Any] = {}
        if self.above:
            out["above"] = self.above
        for name in ("size", "quality", "tool", "service_tier"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        return out

    def describe(self) -> dict[str, Any]:
        """The component as the API and the snapshots show it (shared: copy it to
        change it)."""
        return self.shown

    @property
    def plain(self) -> bool:
        """Whether it applies whatever the request (no condition)."""
        return self.key[1:] == _PLAIN


def decimal_text(value: Decimal) -> str:
    """A rate without trailing zeros beyond two decimals ("2.50", "0.000125", "3.00")."""
    text = format(value.normalize(), "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


_PLAIN = (0, "", "", "", "")
# ``Price.static``: the unit's component depends on the request's facts.
_DEPENDS = object()


@dataclass(frozen=True, slots=True)
class Line:
    """One unit of a bill: the component that priced it (another unit's, when it fell
    back), the quantity billed and its pico-USD amount (before the multiplier)."""

    unit: str
    component: Component
    quantity: int
    pico: int


@dataclass(frozen=True, slots=True)
class Bill:
    lines: tuple[Line, ...]
    # The exact cost in pico-USD, the multiplier applied.
    pico: int

    @property
    def counts_tokens(self) -> bool:
        """Whether tokens cost anything in it (a local count of them would move it)."""
        return any(line.pico and UNITS[line.unit].group != "other" for line in self.lines)


def _quantities(units: Units) -> Iterable[tuple[str, int, str, str, str]]:
    """(unit, quantity, size, quality, tool) for every unit ``units`` counts."""
    for name, unit in TOKEN_FIELDS.items():
        quantity = getattr(units, name)
        if quantity:
            yield unit, quantity, "", "", ""
    for size, quality, count in units.images:
        yield "image", count, size, quality, ""
    if units.audio_ms:
        yield "audio_second", units.audio_ms, "", "", ""
    if units.characters:
        yield "character", units.characters, "", "", ""
    if units.search_units:
        yield "search_unit", units.search_units, "", "", ""
    for tool, count in units.tool_calls:
        yield "tool_call", count, "", "", tool


@dataclass(frozen=True, slots=True)
class Price:
    """One price version: its components, the group's multiplier and where it came
    from (``price_id``: the version's id; None for a channel's cost price)."""

    model: str
    components: tuple[Component, ...]
    multiplier: Decimal = Decimal(1)
    price_id: int | None = None
    mode: str = "chat"
    # unit -> its components, best first (``Component.rank``)
    by_unit: Mapping[str, tuple[Component, ...]] = field(init=False, repr=False, compare=False)
    # The multiplier as a fraction (numerator, denominator) of integers.
    _ratio: tuple[int, int] = field(init=False, repr=False, compare=False)
    # unit -> the component that bills it whatever the request (None: not billed),
    # for the units whose fallback chain has no conditional component: most prices
    # have none, and then billing looks nothing up.
    static: Mapping[str, Any] = field(init=False, repr=False, compare=False)
    # The context tiers' thresholds, ascending, and the dearest rates worked out for
    # holds, by (units, tiers passed).
    tiers: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _dearest_known: dict[tuple[tuple[str, ...], int], int] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        keys = [c.key for c in self.components]
        if len(set(keys)) != len(keys):
            raise PriceError("two components have the same unit and conditions", "components")
        grouped: dict[str, list[Component]] = {}
        for c in self.components:
            grouped.setdefault(c.unit, []).append(c)
        object.__setattr__(
            self,
            "by_unit",
            {
                u: tuple(sorted(cs, key=lambda c: (c.rank, c.key), reverse=True))
                for u, cs in grouped.items()
            },
        )
        if self.multiplier < 0:
            raise PriceError("a multiplier is zero or more", "multiplier")
        numerator, denominator = Decimal(self.multiplier).as_integer_ratio()
        object.__setattr__(self, "_ratio", (numerator, denominator))
        static: dict[str, Any] = {}
        for unit in UNITS:
            chain: list[str] = []
            name: str | None = unit
            while name is not None:
                chain.append(name)
                name = FALLBACK.get(name)
            if all(c.plain for n in chain for c in grouped.get(n, ())):
                static[unit] = next((grouped[n][0] for n in chain if n in grouped), None)
        object.__setattr__(self, "static", static)
        object.__setattr__(
            self, "tiers", tuple(sorted({c.above for c in self.components if c.above}))
        )
        object.__setattr__(self, "_dearest_known", {})

    # -- building -------------------------------------------------------------------

    @classmethod
    def of(
        cls,
        *,
        model: str,
        components: Iterable[Mapping[str, Any] | Component],
        multiplier: Decimal | str | int = 1,
        price_id: int | None = None,
        mode: str = "chat",
    ) -> "Price":
        """A price from component specs (``{"unit", "rate", "above", ...}``)."""
        built = tuple(
            c if isinstance(c, Component) else Component.of(**dict(c)) for c in components
        )
        return cls(
            model=model,
            components=built,
            multiplier=Decimal(multiplier),
            price_id=price_id,
            mode=mode,
        )

    # -- billing --------------------------------------------------------------------

    def component_for(
        self,
        unit: str,
        *,
        prompt: int,
        tier: str = "",
        size: str = "",
        quality: str = "",
        tool: str = "",
    ) -> Component | None:
        """The component that bills ``unit`` for a request with these facts."""
        name: str | None = unit
        while name is not None:
            for c in self.by_unit.get(name, ()):
                if c.applies(prompt, tier, size, quality, tool):
                    return c
            name = FALLBACK.get(name)
        return None

    def bill(self, units: Units) -> Bill:
        """The bill of a request that used ``units`` (one request included)."""
        prompt, tier = units.prompt, units.service_tier
        lines: list[Line] = []
        raw = 0
        for unit, quantity, size, quality, tool in (
            *_quantities(units),
            ("request", 1, "", "", ""),
        ):
            c = self.static.get(unit, _DEPENDS)
            if c is _DEPENDS:
                c = self.component_for(
                    unit, prompt=prompt, tier=tier, size=size, quality=quality, tool=tool
                )
            if c is None:
                continue
            amount = quantity * c.pico
            raw += amount
            lines.append(Line(unit=unit, component=c, quantity=quantity, pico=amount))
        return Bill(lines=tuple(lines), pico=self._scaled(raw))

    def cost(self, units: Units) -> int:
        """Pico-USD charged for ``units`` (the multiplier applied, rounded once)."""
        return self.bill(units).pico

    def _scaled(self, raw: int) -> int:
        numerator, denominator = self._ratio
        if denominator == 1:
            return raw * numerator
        return (2 * raw * numerator + denominator) // (2 * denominator)

    def _dearest(self, units: tuple[str, ...], prompt: int) -> int:
        """The dearest pico rate among ``units`` (and the kinds they fall back to) for
        any request whose prompt is at most ``prompt`` tokens, whatever its other
        facts. It depends on the prompt only through the tiers it passes, so it is
        worked out once per tier (every request is held)."""
        tier = bisect_left(self.tiers, prompt)
        known = self._dearest_known.get((units, tier))
        if known is None:
            known = self._dearest_at(units, self.tiers[tier - 1] + 1 if tier else 0)
            self._dearest_known[(units, tier)] = known
        return known

    def _dearest_at(self, units: tuple[str, ...], prompt: int) -> int:
        best = 0
        for unit in units:
            name: str | None = unit
            while name is not None:
                for c in self.by_unit.get(name, ()):
                    if c.above == 0 or prompt > c.above:
                        best = max(best, c.pico)
                name = FALLBACK.get(name)
        return best

    def hold(
        self, *, prompt_tokens: int, completion_tokens: int, units: Units | None = None
    ) -> int:
        """Micro-USD to hold for a request of at most ``prompt_tokens`` prompt tokens
        and ``completion_tokens`` completion tokens (of any kind), plus the other
        units it may use: the dearest rate each can reach, rounded up; never zero."""
        raw = prompt_tokens * self._dearest(PROMPT_UNITS, prompt_tokens)
        raw += completion_tokens * self._dearest(COMPLETION_UNITS, prompt_tokens)
        raw += self._dearest(("request",), prompt_tokens)
        if units is not None:
            for unit, quantity, _, _, _ in _quantities(units):
                if UNITS[unit].group == "other":
                    raw += quantity * self._dearest((unit,), prompt_tokens)
        numerator, denominator = self._ratio
        scaled = -(-raw * numerator // denominator)
        return max(1, -(-scaled // PICO_PER_MICRO))

    # -- showing --------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """The price as ``/v1/models`` and the API show it."""
        out: dict[str, Any] = {"price_id": self.price_id}
        if self.multiplier != 1:
            out["multiplier"] = decimal_text(self.multiplier)
        out["components"] = [c.describe() for c in self.ordered()]
        return out

    def ordered(self) -> list[Component]:
        """Components in the order of ``UNITS``, then by conditions."""
        order = {name: i for i, name in enumerate(UNITS)}
        return sorted(self.components, key=lambda c: (order[c.unit], c.key))

    def rate(self, unit: str) -> Decimal | None:
        """The base rate of ``unit`` (no conditions), after its fallbacks; None when
        the price has none. For showing only."""
        c = self.component_for(unit, prompt=0)
        return c.rate * self.multiplier if c is not None else None

    def list_rate(self) -> int:
        """What ``auto``'s cheapest strategy compares models of one mode by: the base
        input and output rates (pico-USD per token), or, for a price with neither, the
        sum of its base rates."""
        base = {c.unit: c.pico for c in self.components if c.key[1:] == (0, "", "", "", "")}
        tokens = base.get("input", 0) + base.get("output", 0)
        return self._scaled(tokens if tokens else sum(base.values()))

    def snapshot(self, bill: Bill) -> dict[str, Any]:
        """What a usage record keeps: this version and every component it used, with
        the quantity billed and the amount (USD, before the multiplier)."""
        out: dict[str, Any] = {"model": self.model, "price_id": self.price_id}
        if self.multiplier != 1:
            out["multiplier"] = decimal_text(self.multiplier)
        out["components"] = [_line_text(line) for line in bill.lines]
        out["cost"] = pico_to_usd(bill.pico)
        return out


def _line_text(line: Line) -> dict[str, Any]:
    out = {**line.component.describe(), "unit": line.unit}
    if line.component.unit != line.unit:
        # No rate of its own: billed at the rate of the kind it falls back to.
        out["rate_of"] = line.component.unit
    out["quantity"] = _quantity_text(line.unit, line.quantity)
    out["cost"] = pico_to_usd(line.pico)
    return out


def _quantity_text(unit: str, quantity: int) -> int | float:
    # Audio is counted in milliseconds and priced per second.
    return quantity / 1000 if unit == "audio_second" else quantity


def token_components(
    *,
    input: Any,
    output: Any,
    cache_read: Any = None,
    cache_write: Any = None,
    cache_write_1h: Any = None,
    reasoning: Any = None,
    request: Any = None,
) -> list[dict[str, Any]]:
    """Component specs for a plain per-token price (USD per 1M tokens; a
    ``request`` fee in USD per request)."""
    rates = {
        "input": input,
        "output": output,
        "cache_read": cache_read,
        "cache_write": cache_write,
        "cache_write_1h": cache_write_1h,
        "reasoning": reasoning,
        "request": request,
    }
    return [{"unit": u, "rate": r} for u, r in rates.items() if r is not None]


# The flat shorthand of a per-token price: its keys and the unit each sets.
_SHORTHAND = {
    "input": "input",
    "output": "output",
    "cache_read": "cache_read",
    "cache_write": "cache_write",
    "cache_write_1h": "cache_write_1h",
    "reasoning": "reasoning",
    "request_fee": "request",
}


def price_spec_components(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Component specs from a price as JSON: ``{"components": [...]}``, or the flat
    shorthand ``{"input": "0.15", "output": "0.60", "cache_read": ..., "request_fee":
    ...}`` (USD per 1M tokens; per request for the fee). Raises PriceError."""
    if not isinstance(raw, Mapping):
        raise PriceError("a price is an object", "components")
    if "components" in raw:
        extra = set(raw) - {"components"}
        if extra:
            raise PriceError(f"unknown field `{sorted(extra)[0]}`", sorted(extra)[0])
        specs = raw["components"]
        if not isinstance(specs, list) or not all(isinstance(s, Mapping) for s in specs):
            raise PriceError("`components` is an array of objects", "components")
        return [dict(s) for s in specs]
    unknown = set(raw) - set(_SHORTHAND)
    if unknown:
        raise PriceError(f"unknown field `{sorted(unknown)[0]}`", sorted(unknown)[0])
    return [
        {"unit": _SHORTHAND[k], "rate": v}
        for k, v in raw.items()
        if v is not None and not (k == "request_fee" and Decimal(str(v)) == 0)
    ]
