"""OpenAI-compatible upstreams (see ``provider``); ``messages`` serves the Anthropic
Messages API over chat completions, for this provider and the mock."""

from .provider import OpenAIProvider

__all__ = ["OpenAIProvider"]
