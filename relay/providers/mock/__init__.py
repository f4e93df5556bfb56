"""The built-in mock upstream (``upstream``: the fake model; ``provider``: how the
relay calls it)."""

from .provider import MockProvider

__all__ = ["MockProvider"]
