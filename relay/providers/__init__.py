"""The upstream providers, one folder each, behind the ``Provider`` protocol
(``base``), and the registry that maps a channel's ``type`` to its provider.

Adding a provider: a folder with a class that satisfies ``Provider``, and one line
below. The channel type, its label in the admin and the API, and the dialects it
can serve all follow from the class.
"""

from functools import cache

from .anthropic import AnthropicProvider
from .base import Call, Provider, UpstreamFailure, UpstreamStream, UpstreamStreamError
from .cohere import CohereProvider
from .mock import MockProvider
from .openai import OpenAIProvider

PROVIDERS: dict[str, Provider] = {
    p.name: p for p in (OpenAIProvider(), AnthropicProvider(), MockProvider(), CohereProvider())
}


# Every header some provider takes from the caller (the handlers pick these out).
FORWARDED_HEADERS = tuple(sorted({h for p in PROVIDERS.values() for h in p.forwarded_headers}))


def provider_for(channel_type: str) -> Provider:
    return PROVIDERS[channel_type]


def channel_types() -> list[tuple[str, str]]:
    """The channel types, as model field choices."""
    return [(p.name, p.label) for p in PROVIDERS.values()]


def passes_responses_through(channel_type: str) -> bool:
    """Whether a channel of this type may pass ``/v1/responses`` through to an
    upstream that speaks the Responses API (its ``responses_api`` flag): the
    OpenAI-compatible ones. The others translate it, and Tollgate keeps what they
    serve."""
    return channel_type == OpenAIProvider.name


@cache
def serving(dialect: str) -> frozenset[str]:
    """The channel types able to serve ``dialect``."""
    return frozenset(p.name for p in PROVIDERS.values() if dialect in p.dialects)


__all__ = [
    "FORWARDED_HEADERS",
    "PROVIDERS",
    "Call",
    "Provider",
    "UpstreamFailure",
    "UpstreamStream",
    "UpstreamStreamError",
    "channel_types",
    "passes_responses_through",
    "provider_for",
    "serving",
]
