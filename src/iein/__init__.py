"""iein: Iterative Emotion Interaction Network for Emotion Recognition in Conversations."""
from __future__ import annotations

__version__ = "0.1.0"
