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


def cut_by_cap(epochs_run: int, best_epoch: int, max_epochs: int, patience: int) -> bool:
    """True when the epoch cap, not this rule, ended a run that was still improving on dev:
    it ran all ``max_epochs`` epochs and its best epoch lies inside the last ``patience`` of
    them (at the cap the rule had not yet fired).  Such a run's selected model is whatever
    the cap left, so a comparison with runs that stopped on dev says nothing."""
    return epochs_run >= max_epochs and max_epochs - best_epoch < patience


def cap_of(run: dict[str, Any]) -> bool:
    """:func:`cut_by_cap` of a recorded run (``runs.jsonl``: ``epochs_run``, ``best_epoch``
    and its ``train_config``)."""
    cfg = run.get("train_config") or {}
    if not cfg.get("max_epochs") or not cfg.get("patience"):  # not recorded: nothing to say
        return False
    return cut_by_cap(int(run["epochs_run"]), int(run["best_epoch"]), int(cfg["max_epochs"]), int(cfg["patience"]))
