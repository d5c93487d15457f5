"""iein: Iterative Emotion Interaction Network for Emotion Recognition in Conversations."""
from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# OpenMP reads its wait policy once, when torch loads it: set it here, before any iein module
# imports torch, unless the user chose one.  With the default (spin, then sleep) a 2-thread
# training on a busy 2-core machine ran 15-30x slower than 1 thread; PASSIVE removes that
# (bench/bench_threads.py, docs/results.md).
for _key, _value in (("OMP_WAIT_POLICY", "PASSIVE"),):
    _os.environ.setdefault(_key, _value)

__all__ = ["Recognizer", "__version__"]


def __getattr__(name: str):
    # Lazy: `import iein` stays light (no torch import) until the API is used.
    if name == "Recognizer":
        from .recognizer import Recognizer

        return Recognizer
    raise AttributeError(f"module 'iein' has no attribute {name!r}")
