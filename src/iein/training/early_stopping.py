"""The one early-stopping rule, used by the trainer and by the report's patience replay.

Selection is on dev only: an epoch is the new best when its dev score is *strictly* higher
than every earlier one (ties keep the earlier, cheaper model); training stops once
``patience`` epochs have passed without a new best, but never before ``min_epochs``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass
class EarlyStopping:
    patience: int
    min_epochs: int = 0
    best_score: float = float("-inf")
    best_epoch: int = 0

    def update(self, epoch: int, score: float) -> bool:
        """Record ``epoch``'s dev score; True when it is the new best."""
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            return True
        return False

    def should_stop(self, epoch: int) -> bool:
        return epoch >= max(self.min_epochs, 1) and epoch - self.best_epoch >= self.patience

    def state(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch}


def replay(scores: Sequence[float], patience: int, min_epochs: int = 0) -> tuple[int, int]:
    """``(selected epoch, last epoch run)`` of the rule over per-epoch dev ``scores``
    (epoch 1 first), as if training had run with this ``patience``."""
    rule = EarlyStopping(patience, min_epochs)
    last = 0
    for epoch, score in enumerate(scores, start=1):
        last = epoch
        rule.update(epoch, float(score))
        if rule.should_stop(epoch):
            break
    return rule.best_epoch, last
