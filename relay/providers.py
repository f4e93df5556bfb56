"""Which adapter speaks to which channel type."""

from .adapters import MockAdapter, OpenAIAdapter
from .anthropic import AnthropicAdapter
from .selectors import ChannelInfo

Adapter = OpenAIAdapter | AnthropicAdapter | MockAdapter

ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
    "mock": MockAdapter(),
}


def adapter_for(channel: ChannelInfo) -> Adapter:
    return ADAPTERS[channel.type]
