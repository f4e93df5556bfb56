"""Anthropic usage -> disjoint units.

Anthropic's ``input_tokens`` excludes ``cache_read_input_tokens`` and
``cache_creation_input_tokens``, so its kinds are disjoint already. Cache writes are
split by how long they are kept (``cache_creation.ephemeral_5m_input_tokens`` and
``ephemeral_1h_input_tokens``; an hour costs more), and server tools are counted
(``server_tool_use.web_search_requests``...). Its stream usage is cumulative: the
newest value of each field wins, and the split arrives with ``message_start`` only.
"""

from typing import Any

from core.money import Units, tool_calls_of

from ...fields import as_count, as_dict

# server_tool_use counters -> the tool type billed per call.
SERVER_TOOLS = {"web_search_requests": "web_search", "web_fetch_requests": "web_fetch"}


def tokens_from_anthropic(usage: dict[str, Any]) -> Units:
    written = as_count(usage.get("cache_creation_input_tokens"))
    split = as_dict(usage.get("cache_creation"))
    hour = as_count(split.get("ephemeral_1h_input_tokens"))
    if split and not written:
        written = as_count(split.get("ephemeral_5m_input_tokens")) + hour
    hour = min(hour, written)
    tools = as_dict(usage.get("server_tool_use"))
    tier = usage.get("service_tier")
    return Units(
        input=as_count(usage.get("input_tokens")),
        cache_read=as_count(usage.get("cache_read_input_tokens")),
        cache_write=written - hour,
        cache_write_1h=hour,
        output=as_count(usage.get("output_tokens")),
        tool_calls=tool_calls_of(
            {tool: as_count(tools.get(field)) for field, tool in SERVER_TOOLS.items()}
        ),
        service_tier=tier[:32] if isinstance(tier, str) and tier != "standard" else "",
    )
