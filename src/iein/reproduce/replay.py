"""Early stopping replayed on stored dev histories (no retraining): what another patience would
have selected, and where a reproduction's wall time went."""
from __future__ import annotations

from typing import Any, Sequence

from ..evaluation.metrics import mean_std

__all__ = ["stop_epoch", "time_profile", "replayable", "patience_what_if"]


def mean_of(values: Sequence[float]) -> float | None:
    return mean_std(values)[0] if values else None


def stop_epoch(history: Sequence[dict[str, Any]], patience: int, min_epochs: int) -> tuple[int, int]:
    """Replay the trainer's early stopping on a stored dev history with another ``patience``:
    ``(selected epoch, last epoch run)``, by the trainer's own rule
    (:func:`iein.training.early_stopping.replay`)."""
    from ..training.early_stopping import replay

    return replay([float(row["dev_score"]) for row in history], patience, min_epochs)


def time_profile(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Where the wall time of some runs went, in seconds: training epochs up to the selected
    one, training epochs after it (early stopping's patience), and the rest (per-epoch dev
    evaluation, the final test prediction and the worker's one-off data preparation)."""
    out = {"total": 0.0, "until_best": 0.0, "after_best": 0.0, "other": 0.0}
    for r in runs:
        if "wall_seconds" not in r:
            continue
        secs = [float(h.get("seconds", 0.0)) for h in r["history"]]
        best = int(r["best_epoch"])
        out["total"] += float(r["wall_seconds"])
        out["until_best"] += sum(secs[:best])
        out["after_best"] += sum(secs[best:])
        out["other"] += float(r["wall_seconds"]) - sum(secs)
    return out


def replayable(run: dict[str, Any]) -> bool:
    """Whether a run stored everything a patience replay needs: wall time, and a dev score
    and training seconds for every epoch it ran."""
    hist = run.get("history") or []
    return ("wall_seconds" in run and len(hist) == int(run.get("epochs_run", -1))
            and all("dev_score" in h and "seconds" in h for h in hist))


def patience_what_if(runs: Sequence[dict[str, Any]], patience: int) -> dict[str, float]:
    """What a smaller ``patience`` would have changed, from the stored dev histories alone:
    how many runs keep the same selected epoch (hence the very same model and test scores),
    the mean dev-score loss of the others, and the share of wall time saved (cut epochs'
    training seconds plus their share of the evaluation overhead)."""
    same, dev_loss, saved, total, n = 0, [], 0.0, 0.0, 0
    for r in runs:
        if not replayable(r):
            continue
        n += 1
        hist = r["history"]
        cfg = r["train_config"]
        sel, last = stop_epoch(hist, patience, int(cfg.get("min_epochs", 0)))
        full_sel = int(r["best_epoch"])
        if sel == full_sel:
            same += 1
        else:
            dev_loss.append(float(hist[full_sel - 1]["dev_score"]) - float(hist[sel - 1]["dev_score"]))
        secs = [float(h.get("seconds", 0.0)) for h in hist]
        per_epoch_other = (float(r["wall_seconds"]) - sum(secs)) / max(len(hist), 1)
        saved += sum(secs[last:]) + per_epoch_other * (len(hist) - last)
        total += float(r["wall_seconds"])
    return {"runs": n, "same": same, "dev_loss": mean_of(dev_loss) or 0.0,
            "saved_pct": 100.0 * saved / total if total else 0.0}
