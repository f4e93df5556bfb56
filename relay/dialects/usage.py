"""The ``usage`` object of the OpenAI-style dialects (chat completions, embeddings,
completions...)."""

from typing import Any

from core.money import Units, pico_to_usd


def usage_payload(
    units: Units, cost: int, upstream_usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``usage`` object Tollgate returns: the upstream's OpenAI fields kept as they
    were, plus the same totals under the names OpenAI's Responses API gives them
    (``input_tokens`` = ``prompt_tokens``, cached included; ``output_tokens`` =
    ``completion_tokens``, reasoning included), the breakdowns by kind, the other
    units billed, and the ``cost`` (exact USD; ``cost`` is in pico-USD here).
    Internally every kind is billed once, disjointly; on the wire a name never means
    two things. The kinds beyond OpenAI's five appear only when not zero."""
    out: dict[str, Any] = dict(upstream_usage) if upstream_usage else {}
    out.setdefault("prompt_tokens", units.prompt)
    out.setdefault("completion_tokens", units.completion)
    out.setdefault("total_tokens", units.total)
    if units.cache_read or units.cache_write or units.cache_write_1h:
        out.setdefault(
            "prompt_tokens_details",
            {
                "cached_tokens": units.cache_read,
                "cache_write_tokens": units.cache_write + units.cache_write_1h,
            },
        )
    if units.reasoning:
        out.setdefault("completion_tokens_details", {"reasoning_tokens": units.reasoning})
    out["input_tokens"] = units.prompt
    out["output_tokens"] = units.completion
    out["cache_read_tokens"] = units.cache_read
    out["cache_write_tokens"] = units.cache_write
    out["reasoning_tokens"] = units.reasoning
    out.update(units_beyond_tokens(units))
    out["cost"] = pico_to_usd(cost)
    return out


def units_beyond_tokens(units: Units) -> dict[str, Any]:
    """The breakdowns and units beyond OpenAI's token fields, those not zero: one-hour
    cache writes (apart from ``cache_write_tokens``, the five-minute ones), audio and
    image tokens (parts of ``input_tokens`` and ``output_tokens``), images, seconds of
    audio, characters, search units and tool calls by type."""
    out: dict[str, Any] = {}
    for name in (
        "cache_write_1h",
        "audio_input",
        "audio_output",
        "image_input",
        "image_output",
    ):
        if getattr(units, name):
            out[f"{name}_tokens"] = getattr(units, name)
    if units.images:
        out["images"] = units.image_count
    if units.audio_ms:
        out["audio_seconds"] = units.audio_ms / 1000
    if units.characters:
        out["characters"] = units.characters
    if units.search_units:
        out["search_units"] = units.search_units
    if units.tool_calls:
        out["tool_calls"] = dict(units.tool_calls)
    return out
