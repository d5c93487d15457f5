"""iein: Iterative Emotion Interaction Network for Emotion Recognition in Conversations."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Recognizer", "__version__"]


def __getattr__(name: str):
    # Lazy: `import iein` stays light (no torch import) until the API is used.
    if name == "Recognizer":
        from .recognizer import Recognizer

        return Recognizer
    raise AttributeError(f"module 'iein' has no attribute {name!r}")
