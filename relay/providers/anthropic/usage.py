"""Anthropic usage -> disjoint token kinds.

Anthropic's ``input_tokens`` excludes ``cache_read_input_tokens`` and
``cache_creation_input_tokens``, so its kinds are disjoint already. Its stream usage
is cumulative: the newest value of each field wins.
"""

from typing import Any

from core.money import TokenCounts

from ...fields import as_count


def tokens_from_anthropic(usage: dict[str, Any]) -> TokenCounts:
    return TokenCounts(
        input=as_count(usage.get("input_tokens")),
        cache_read=as_count(usage.get("cache_read_input_tokens")),
        cache_write=as_count(usage.get("cache_creation_input_tokens")),
        output=as_count(usage.get("output_tokens")),
    )
