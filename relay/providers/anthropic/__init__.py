"""Anthropic Messages upstreams (see ``provider``); ``chat`` serves chat completions
over the Messages API."""

from .provider import AnthropicProvider

__all__ = ["AnthropicProvider"]
