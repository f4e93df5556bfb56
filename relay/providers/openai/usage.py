"""OpenAI usage -> disjoint units.

OpenAI's ``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens`` (and its
audio and image tokens) and its ``completion_tokens`` includes
``completion_tokens_details.reasoning_tokens`` (and audio and image tokens); each
token ends up in exactly one kind here. The Responses and Images APIs name the same
totals ``input_tokens`` and ``output_tokens`` with ``*_details`` beside them.

OpenAI-compatible upstreams vary: DeepSeek reports cache hits as
``prompt_cache_hit_tokens``; some report cache writes as ``cache_write_tokens`` or
``cache_creation_tokens``; Gemini's compatible endpoint leaves its thinking tokens
out of ``completion_tokens`` (its ``total_tokens`` counts them on top), so there
they are added back rather than taken out of the answer's own tokens.
"""

from dataclasses import replace
from typing import Any

from core.money import Units

from ...fields import as_count, as_dict


def tokens_from_openai(usage: dict[str, Any]) -> Units:
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        prompt = as_count(usage.get("prompt_tokens"))
        completion = as_count(usage.get("completion_tokens"))
        pdetails = as_dict(usage.get("prompt_tokens_details"))
        cdetails = as_dict(usage.get("completion_tokens_details"))
    else:
        prompt = as_count(usage.get("input_tokens"))
        completion = as_count(usage.get("output_tokens"))
        pdetails = as_dict(usage.get("input_tokens_details"))
        cdetails = as_dict(usage.get("output_tokens_details"))
    reasoning = as_count(cdetails.get("reasoning_tokens"))
    total = as_count(usage.get("total_tokens"))
    if reasoning and total and total == prompt + completion + reasoning:
        completion += reasoning

    def take(value: Any, left: int) -> int:
        return min(as_count(value), left)

    cached = take(pdetails.get("cached_tokens") or usage.get("prompt_cache_hit_tokens"), prompt)
    left = prompt - cached
    cache_write = take(
        pdetails.get("cache_write_tokens") or pdetails.get("cache_creation_tokens"), left
    )
    left -= cache_write
    audio_in = take(pdetails.get("audio_tokens"), left)
    left -= audio_in
    image_in = take(pdetails.get("image_tokens"), left)
    left -= image_in
    reasoning = min(reasoning, completion)
    out_left = completion - reasoning
    audio_out = take(cdetails.get("audio_tokens"), out_left)
    out_left -= audio_out
    image_out = take(cdetails.get("image_tokens"), out_left)
    out_left -= image_out
    return Units(
        input=left,
        cache_read=cached,
        cache_write=cache_write,
        audio_input=audio_in,
        image_input=image_in,
        output=out_left,
        reasoning=reasoning,
        audio_output=audio_out,
        image_output=image_out,
    )


def reported(data: dict[str, Any]) -> Units | None:
    """The units of the ``usage`` object an answer or a chunk carries, if any, in the
    service tier the answer says it was served in."""
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    units = tokens_from_openai(usage)
    tier = data.get("service_tier")
    if isinstance(tier, str) and tier not in ("", "default", "auto"):
        return replace(units, service_tier=tier[:32])
    return units
