"""The inbound wire formats the relay speaks, one module each (see ``base``).

Adding an endpoint family: a module with a ``Dialect`` subclass and one line below;
its route follows from ``path``. The providers that can serve it say so in their
``dialects``.
"""

from .base import Dialect
from .chat import CHAT
from .embeddings import EMBEDDINGS
from .messages import MESSAGES

DIALECTS: tuple[Dialect, ...] = (CHAT, MESSAGES, EMBEDDINGS)

BY_PATH = {d.path: d for d in DIALECTS}

__all__ = ["BY_PATH", "CHAT", "DIALECTS", "EMBEDDINGS", "MESSAGES", "Dialect"]
