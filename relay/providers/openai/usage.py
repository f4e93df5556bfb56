"""OpenAI usage -> disjoint token kinds.

OpenAI's ``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens`` and its
``completion_tokens`` includes ``completion_tokens_details.reasoning_tokens``; each
token ends up in exactly one kind here.
"""

from typing import Any

from core.money import TokenCounts

from ...fields import as_count, as_dict


def tokens_from_openai(usage: dict[str, Any]) -> TokenCounts:
    prompt = as_count(usage.get("prompt_tokens"))
    completion = as_count(usage.get("completion_tokens"))
    pdetails = as_dict(usage.get("prompt_tokens_details"))
    cdetails = as_dict(usage.get("completion_tokens_details"))
    cached = as_count(pdetails.get("cached_tokens")) or as_count(
        usage.get("prompt_cache_hit_tokens")
    )
    cache_write = as_count(pdetails.get("cache_write_tokens")) or as_count(
        pdetails.get("cache_creation_tokens")
    )
    cached = min(cached, prompt)
    cache_write = min(cache_write, prompt - cached)
    reasoning = min(as_count(cdetails.get("reasoning_tokens")), completion)
    return TokenCounts(
        input=prompt - cached - cache_write,
        cache_read=cached,
        cache_write=cache_write,
        output=completion - reasoning,
        reasoning=reasoning,
    )


def reported(data: dict[str, Any]) -> TokenCounts | None:
    """The tokens of the ``usage`` object an answer or a chunk carries, if any."""
    usage = data.get("usage")
    return tokens_from_openai(usage) if isinstance(usage, dict) else None
