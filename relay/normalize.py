"""Upstream usage -> disjoint token kinds, and back to the response ``usage`` object.

OpenAI's ``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens`` and its
``completion_tokens`` includes ``completion_tokens_details.reasoning_tokens``.
Anthropic's ``input_tokens`` excludes ``cache_read_input_tokens`` and
``cache_creation_input_tokens``. Either way each token ends up in exactly one kind.
"""

from typing import Any

from core.money import TokenCounts, micro_to_usd


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return 0
    return int(value)


def tokens_from_openai(usage: dict[str, Any]) -> TokenCounts:
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    pdetails = usage.get("prompt_tokens_details") or {}
    cdetails = usage.get("completion_tokens_details") or {}
    if not isinstance(pdetails, dict):
        pdetails = {}
    if not isinstance(cdetails, dict):
        cdetails = {}
    cached = _count(pdetails.get("cached_tokens")) or _count(usage.get("prompt_cache_hit_tokens"))
    cache_write = _count(pdetails.get("cache_write_tokens")) or _count(
        pdetails.get("cache_creation_tokens")
    )
    cached = min(cached, prompt)
    cache_write = min(cache_write, prompt - cached)
    reasoning = min(_count(cdetails.get("reasoning_tokens")), completion)
    return TokenCounts(
        input=prompt - cached - cache_write,
        cache_read=cached,
        cache_write=cache_write,
        output=completion - reasoning,
        reasoning=reasoning,
    )


def tokens_from_anthropic(usage: dict[str, Any]) -> TokenCounts:
    return TokenCounts(
        input=_count(usage.get("input_tokens")),
        cache_read=_count(usage.get("cache_read_input_tokens")),
        cache_write=_count(usage.get("cache_creation_input_tokens")),
        output=_count(usage.get("output_tokens")),
    )


def usage_payload(
    tokens: TokenCounts, cost: int, upstream_usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``usage`` object Tollgate returns: the upstream's OpenAI fields kept as they
    were, plus the same totals under the names OpenAI's Responses API gives them
    (``input_tokens`` = ``prompt_tokens``, cached included; ``output_tokens`` =
    ``completion_tokens``, reasoning included), the breakdowns by kind, and the
    ``cost`` in USD. Internally every kind is billed once, disjointly; on the wire a
    name never means two things."""
    out: dict[str, Any] = dict(upstream_usage) if upstream_usage else {}
    out.setdefault("prompt_tokens", tokens.prompt)
    out.setdefault("completion_tokens", tokens.completion)
    out.setdefault("total_tokens", tokens.total)
    if tokens.cache_read or tokens.cache_write:
        out.setdefault(
            "prompt_tokens_details",
            {"cached_tokens": tokens.cache_read, "cache_write_tokens": tokens.cache_write},
        )
    if tokens.reasoning:
        out.setdefault("completion_tokens_details", {"reasoning_tokens": tokens.reasoning})
    out["input_tokens"] = tokens.prompt
    out["output_tokens"] = tokens.completion
    out["cache_read_tokens"] = tokens.cache_read
    out["cache_write_tokens"] = tokens.cache_write
    out["reasoning_tokens"] = tokens.reasoning
    out["cost"] = micro_to_usd(cost)
    return out
