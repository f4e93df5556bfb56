"""The ``usage`` object of the OpenAI-style dialects (chat completions, embeddings)."""

from typing import Any

from core.money import TokenCounts, micro_to_usd


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
