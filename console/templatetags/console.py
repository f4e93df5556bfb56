from django import template
from django.utils.html import format_html

from core.money import micro_to_usd

register = template.Library()


@register.filter
def usd(amount: int | None) -> str:
    """Micro-USD as dollars: exact, with at least two decimals ($10.00, $0.000009)."""
    if amount is None:
        return "—"
    text = micro_to_usd(int(amount))
    whole, frac = text.split(".")
    frac = frac.rstrip("0").ljust(2, "0")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}${whole.lstrip('-')}.{frac}"


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
