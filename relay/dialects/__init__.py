"""The inbound wire formats the relay speaks, one module each (see ``base``).

Adding an endpoint family: a module with a ``Dialect`` subclass and one line below;
its route follows from ``path``. The providers that can serve it say so in their
``dialects``.
"""

from .audio import SPEECH, TRANSCRIPTIONS, TRANSLATIONS
from .base import Dialect
from .chat import CHAT
from .completions import COMPLETIONS
from .embeddings import EMBEDDINGS
from .images import IMAGE_EDITS, IMAGE_GENERATIONS
from .messages import MESSAGES
from .moderations import MODERATIONS
from .rerank import RERANK
from .responses import RESPONSES

# The endpoints billed in units beyond tokens (images, audio, characters, search units).
MEDIA: tuple[Dialect, ...] = (
    IMAGE_GENERATIONS,
    IMAGE_EDITS,
    TRANSCRIPTIONS,
    TRANSLATIONS,
    SPEECH,
    RERANK,
    MODERATIONS,
)
DIALECTS: tuple[Dialect, ...] = (CHAT, MESSAGES, EMBEDDINGS, RESPONSES, COMPLETIONS, *MEDIA)

BY_PATH = {d.path: d for d in DIALECTS}

__all__ = [
    "BY_PATH",
    "CHAT",
    "COMPLETIONS",
    "DIALECTS",
    "EMBEDDINGS",
    "IMAGE_EDITS",
    "IMAGE_GENERATIONS",
    "MEDIA",
    "MESSAGES",
    "MODERATIONS",
    "RERANK",
    "RESPONSES",
    "SPEECH",
    "TRANSCRIPTIONS",
    "TRANSLATIONS",
    "Dialect",
]
