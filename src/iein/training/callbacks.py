"""Hooks into a training run (Lightning's callbacks, flair's trainer plugins): ``train(...,
callbacks=[...])`` calls each one after every optimiser step and after every finished epoch
(its resume state written).  The trainer itself needs none; tests use :class:`PauseAt` to stop
a run at a known point and kill it."""
from __future__ import annotations

import sys
import time

__all__ = ["Callback", "PauseAt", "PAUSED"]

#: What :class:`PauseAt` prints on stderr when it stops (``PAUSED <point>``).
PAUSED = "iein: paused at"


class Callback:
    """Override what you need; every method is called on every process."""

    def on_step(self, epoch: int, step: int) -> None:
        """After optimiser step ``step`` (1-based) of ``epoch``."""

    def on_epoch_end(self, epoch: int) -> None:
        """After ``epoch`` is logged and its resume state written."""


class PauseAt(Callback):
    """Stop (sleep for an hour) at ``point``: ``"E"`` once epoch E's resume state is written,
    ``"E.B"`` right after the B-th optimiser step of epoch E; announces it on stderr first, so
    a test can SIGKILL the process exactly there."""

    def __init__(self, point: str, seconds: float = 3600.0) -> None:
        self.point, self.seconds = point, seconds

    def _maybe(self, here: str) -> None:
        if here == self.point:
            print(f"{PAUSED} {here}", file=sys.stderr, flush=True)
            time.sleep(self.seconds)

    def on_step(self, epoch: int, step: int) -> None:
        self._maybe(f"{epoch}.{step}")

    def on_epoch_end(self, epoch: int) -> None:
        self._maybe(f"{epoch}")
