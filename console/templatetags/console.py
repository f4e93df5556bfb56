from django import template
from django.utils.html import format_html

from core.money import micro_to_usd, pico_to_usd

register = template.Library()


def _dollars(text: str) -> str:
    whole, frac = text.split(".")
    frac = frac.rstrip("0").ljust(2, "0")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}${whole.lstrip('-')}.{frac}"


@register.filter
def usd(amount: int | None) -> str:
    """Micro-USD as dollars: exact, with at least two decimals ($10.00, $0.000009)."""
    if amount is None:
        return "—"
    return _dollars(micro_to_usd(int(amount)))


@register.filter
def usd_pico(amount: int | None) -> str:
    """Pico-USD as dollars: exact ($0.0000001 for a tenth of a micro-USD)."""
    if amount is None:
        return "—"
    return _dollars(pico_to_usd(int(amount)))


@register.filter
def rate(value) -> str:
    """A price rate (Decimal USD) as dollars, exact, at least two decimals."""
    if value is None:
        return "—"
    text = format(value.normalize(), "f")
    if "." not in text:
        text += ".00"
    return _dollars(text)


@register.filter
def seconds(milliseconds: int | None) -> str:
    """Milliseconds of audio as seconds ("90 s", "12.345 s")."""
    if not milliseconds:
        return "0 s"
    whole, ms = divmod(int(milliseconds), 1000)
    return f"{whole:,}.{ms:03d}".rstrip("0").rstrip(".") + " s"


@register.filter
def thousands(value: int | None) -> str:
    return "—" if value is None else f"{int(value):,}"


_BADGES = {
    "success": "ok",
    "active": "ok",
    "settled": "ok",
    "enabled": "ok",
    "healthy": "ok",
    "cancelled": "warn",
    "interrupted": "warn",
    "cooling down": "warn",
    "open": "warn",
    "upstream_error": "bad",
    "rejected": "bad",
    "failed": "bad",
    "revoked": "muted",
    "expired": "muted",
    "disabled": "bad",
    "released": "muted",
}


@register.filter
def badge(value: str) -> str:
    return format_html(
        '<span class="badge {}">{}</span>',
        _BADGES.get(str(value), ""),
        str(value).replace("_", " "),
    )


def _get(obj, name: str) -> int:
    value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, 0)
    return int(value or 0)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


@register.filter
def other_units(obj) -> str:
    """The units billed beyond the five token columns, those not zero, in words: one-hour
    cache writes, audio and image tokens, images, audio, characters, search units and
    tool calls ("2 images · 90 s of audio"). ``obj``: a usage record or a statement
    line."""
    parts = []
    for column, label in (
        ("cache_write_1h_tokens", "cache write (1 h) tokens"),
        ("audio_input_tokens", "audio input tokens"),
        ("audio_output_tokens", "audio output tokens"),
        ("image_input_tokens", "image input tokens"),
        ("image_output_tokens", "image output tokens"),
    ):
        if _get(obj, column):
            parts.append(f"{_get(obj, column):,} {label}")
    details = obj.get("unit_details") if isinstance(obj, dict) else getattr(obj, "unit_details", {})
    details = details or {}
    images = _get(obj, "images")
    if images:
        sizes = details.get("images") or {}
        kinds = ", ".join(f"{n} at {k.replace('/', ' ').strip()}" for k, n in sorted(sizes.items()))
        parts.append(_plural(images, "image", "images") + (f" ({kinds})" if kinds else ""))
    if _get(obj, "audio_ms"):
        parts.append(f"{seconds(_get(obj, 'audio_ms'))} of audio")
    if _get(obj, "characters"):
        parts.append(_plural(_get(obj, "characters"), "character", "characters"))
    if _get(obj, "search_units"):
        parts.append(_plural(_get(obj, "search_units"), "search unit", "search units"))
    calls = _get(obj, "tool_calls")
    if calls:
        tools = details.get("tool_calls") or {}
        kinds = ", ".join(f"{n} {t.replace('_', ' ')}" for t, n in sorted(tools.items()))
        parts.append(_plural(calls, "tool call", "tool calls") + (f" ({kinds})" if kinds else ""))
    if details.get("service_tier"):
        parts.append(f"{details['service_tier']} tier")
    return " · ".join(parts)
