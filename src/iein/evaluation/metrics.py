"""Evaluation metrics for ERC, as reported in the IEIN paper (COLING 2020).

Everything here works on integer **label ids** (indices into the corpus label tuple, see
:class:`iein.data.conversation.Corpus`), never on probabilities: callers take the argmax of
each step's output first.  Keeping the argmax outside means one function serves the model, a
saved predictions file and a baseline alike.

The numbers themselves come from scikit-learn rather than hand-written formulas so that they
match what other ERC papers (and the IEIN paper) compute: ``f1_score(average="weighted")`` is
the headline metric, and the DailyDialog convention of micro F1 without the majority
"no emotion" class is ``f1_score(labels=<the others>, average="micro")``.

All functions return plain Python ``int``/``float``/``list``/``dict`` values, so results can
be written straight to JSON.  Percentages are in 0..100 because that is how the paper's
tables read; they are not rounded here (rounding is a presentation concern, see
:func:`format_report`).
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

__all__ = [
    "classification_scores",
    "correction_counts",
    "evaluate_steps",
    "mean_std",
    "format_mean_std",
    "format_report",
]

#: The three kinds of change in the paper's Table 4.  (Right->right cannot happen when the
#: predicted label changes, since there is only one right label.)
CORRECTION_KINDS: tuple[str, ...] = ("R->W", "W->R", "W->W")


# --------------------------------------------------------------------------------------------
# input checking


def _as_ids(values: Any, name: str, n_labels: int | None = None) -> np.ndarray:
    """Return ``values`` as a 1-D int64 array, rejecting anything that is not label ids.

    Probabilities (2-D or float arrays) are refused rather than silently argmax-ed: a float
    array reaching a metric is far more often a bug (wrong tensor passed) than an intent.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(
            f"{name}: expected a 1-D sequence of label ids, got shape {arr.shape}"
            " (take the argmax over classes first)"
        )
    if arr.size == 0:
        raise ValueError(f"{name}: no utterances to evaluate")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected integer label ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if n_labels is not None and (arr.min() < 0 or arr.max() >= n_labels):
        bad = int(arr[(arr < 0) | (arr >= n_labels)][0])
        raise ValueError(f"{name}: label id {bad} outside 0..{n_labels - 1}")
    return arr


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise ValueError(f"length mismatch: {detail}")


def _check_labels(labels: Sequence[str], exclude: Sequence[str]) -> list[int]:
    """Validate the label set and return the ids that are *not* excluded."""
    labels = list(labels)
    if not labels:
        raise ValueError("labels: empty label set")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels: duplicate names in {labels}")
    unknown = [e for e in exclude if e not in labels]
    if unknown:
        raise ValueError(f"exclude: {unknown} not in labels {labels}")
    kept = [i for i, name in enumerate(labels) if name not in set(exclude)]
    if not kept:
        raise ValueError("exclude: every label is excluded")
    return kept


# --------------------------------------------------------------------------------------------
# metrics


def classification_scores(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    labels: Sequence[str],
    exclude: Sequence[str] = (),
) -> dict[str, Any]:
    """Score one set of predictions the way the IEIN paper (and ERC papers generally) do.

    Args:
        y_true: gold label ids, one per utterance.
        y_pred: predicted label ids, same length.
        labels: label names; position ``i`` is the name of id ``i``.  Every id is scored, even
            one absent from both gold and predictions, so the keys and the confusion-matrix
            shape depend only on the label set and results from different runs line up.
        exclude: label names left out of ``micro_f1_excl`` (DailyDialog's "no emotion").
            Excluded labels still count everywhere else.

    Returns:
        ``weighted_f1`` and ``accuracy`` (percent), ``per_class_f1`` {label: percent},
        ``support`` {label: gold count}, ``confusion_matrix`` (rows = gold, columns =
        predicted, label order), ``n``; plus ``micro_f1_excl`` (percent) and ``excluded``
        when ``exclude`` is non-empty.  A class with no gold and no predicted utterance gets
        F1 0 (scikit-learn's ``zero_division=0``) and, having support 0, does not move the
        weighted F1.
    """
    kept = _check_labels(labels, exclude)
    n_labels = len(labels)
    gold = _as_ids(y_true, "y_true", n_labels)
    pred = _as_ids(y_pred, "y_pred", n_labels)
    _same_length(y_true=gold, y_pred=pred)
    ids = list(range(n_labels))

    per_class = f1_score(gold, pred, labels=ids, average=None, zero_division=0.0)
    support = np.bincount(gold, minlength=n_labels)
    result: dict[str, Any] = {
        "weighted_f1": 100.0 * float(
            f1_score(gold, pred, labels=ids, average="weighted", zero_division=0.0)
        ),
        "accuracy": 100.0 * float(accuracy_score(gold, pred)),
        "per_class_f1": {name: 100.0 * float(f) for name, f in zip(labels, per_class)},
        "support": {name: int(s) for name, s in zip(labels, support)},
        "confusion_matrix": confusion_matrix(gold, pred, labels=ids).tolist(),
        "n": int(len(gold)),
    }
    if exclude:
        # With labels=<subset>, micro averaging pools TP/FP/FN of the kept classes only:
        # predicting "no emotion" for an emotional utterance is a miss (FN), predicting an
        # emotion for a "no emotion" utterance is a false alarm (FP), and "no emotion"
        # predicted correctly counts for nothing.  That is the DailyDialog convention.
        result["micro_f1_excl"] = 100.0 * float(
            f1_score(gold, pred, labels=kept, average="micro", zero_division=0.0)
        )
        result["excluded"] = [name for name in labels if name in set(exclude)]
    return result


def correction_counts(
    prev_pred: Sequence[int] | np.ndarray,
    next_pred: Sequence[int] | np.ndarray,
    gold: Sequence[int] | np.ndarray,
) -> dict[str, int | float]:
    """Classify the predictions that change between two refinement steps (paper, Table 4).

    Only utterances whose predicted label differs between ``prev_pred`` and ``next_pred``
    are counted: right->wrong (``R->W``), wrong->right (``W->R``) and wrong->wrong
    (``W->W``, a different wrong label).  A useful refinement step has many more W->R than
    R->W.  The shares (``R->W%`` ...) are percentages of ``changed`` and are 0.0 when nothing
    changed, so the result is always a complete, JSON-safe row.
    """
    prev = _as_ids(prev_pred, "prev_pred")
    nxt = _as_ids(next_pred, "next_pred")
    true = _as_ids(gold, "gold")
    _same_length(prev_pred=prev, next_pred=nxt, gold=true)

    changed = prev != nxt
    prev_right = prev == true
    next_right = nxt == true
    counts: dict[str, int | float] = {
        "R->W": int(np.sum(changed & prev_right & ~next_right)),
        "W->R": int(np.sum(changed & ~prev_right & next_right)),
        "W->W": int(np.sum(changed & ~prev_right & ~next_right)),
        "changed": int(np.sum(changed)),
    }
    n_changed = counts["changed"]
    for kind in CORRECTION_KINDS:
        counts[f"{kind}%"] = 100.0 * counts[kind] / n_changed if n_changed else 0.0
    return counts


def evaluate_steps(
    step_preds: Sequence[Sequence[int] | np.ndarray] | np.ndarray,
    gold: Sequence[int] | np.ndarray,
    labels: Sequence[str],
    exclude: Sequence[str] = (),
) -> dict[str, Any]:
    """Evaluate every refinement step of an IEIN run.

    Args:
        step_preds: predicted label ids for steps 0..T (step 0 is the initial prediction,
            the last one is the model's answer); a list of 1-D arrays or a ``(T+1, N)`` array.
        gold, labels, exclude: as in :func:`classification_scores`.

    Returns:
        ``final``: :func:`classification_scores` of the last step, which is what the model is
        judged by; ``steps``: one ``{"step", "weighted_f1", "accuracy"}`` row per step (plus
        ``micro_f1_excl`` when ``exclude`` is given) to show whether iterating helps;
        ``corrections``: one :func:`correction_counts` row per adjacent pair, with ``from``
        and ``to`` step numbers.
    """
    steps = list(step_preds)
    if not steps:
        raise ValueError("step_preds: no steps to evaluate")

    per_step = [classification_scores(gold, p, labels, exclude) for p in steps]
    step_rows: list[dict[str, Any]] = []
    for i, scores in enumerate(per_step):
        row: dict[str, Any] = {
            "step": i,
            "weighted_f1": scores["weighted_f1"],
            "accuracy": scores["accuracy"],
        }
        if exclude:
            row["micro_f1_excl"] = scores["micro_f1_excl"]
        step_rows.append(row)

    corrections = [
        {"from": i, "to": i + 1, **correction_counts(steps[i], steps[i + 1], gold)}
        for i in range(len(steps) - 1)
    ]
    return {"final": per_step[-1], "steps": step_rows, "corrections": corrections}


# --------------------------------------------------------------------------------------------
# aggregation over runs


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation of a metric over repeated runs (seeds).

    The standard deviation is the *sample* one (``ddof=1``): a handful of seeds is a sample
    from the distribution of training outcomes, and the population formula (``ddof=0``)
    would understate the spread, flattering small-seed experiments.  With a single run there
    is no spread to estimate; 0.0 is returned so reports still print, rather than NaN.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_std: no values")
    if any(not math.isfinite(v) for v in vals):
        raise ValueError(f"mean_std: non-finite value in {vals}")
    mean = statistics.fmean(vals)
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return mean, std


def format_mean_std(values: Sequence[float], digits: int = 2) -> str:
    """Format runs as ``"59.12 ± 0.40"``, the way results tables report seeds."""
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# --------------------------------------------------------------------------------------------
# terminal report


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Render a fixed-width table: first column left-aligned, the rest right-aligned."""
    cols = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[j]) for r in cols) for j in range(len(header))]
    lines = []
    for r in cols:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_report(result: dict[str, Any], labels: Sequence[str]) -> str:
    """Render an :func:`evaluate_steps` result as a plain-text report for the terminal.

    A bare :func:`classification_scores` result is accepted too (the per-step and correction
    sections are then omitted).  Labels are passed explicitly so the column order is the
    corpus order even if the dict went through a JSON round trip.
    """
    labels = list(labels)
    final = result.get("final", result)
    sections: list[str] = []

    f1 = final["per_class_f1"]
    support = final["support"]
    sections.append(
        "Per-class F1 (%)\n"
        + _table(
            ["", *labels],
            [
                ["F1", *(f"{f1[name]:.2f}" for name in labels)],
                ["support", *(str(support[name]) for name in labels)],
            ],
        )
    )

    summary = [
        f"weighted F1: {final['weighted_f1']:.2f}",
        f"accuracy: {final['accuracy']:.2f}",
        f"n: {final['n']}",
    ]
    if "micro_f1_excl" in final:
        excluded = ", ".join(final.get("excluded", []))
        summary.append(f"micro F1 excl. {excluded}: {final['micro_f1_excl']:.2f}")
    sections.append("\n".join(summary))

    steps = result.get("steps")
    if steps:
        has_excl = "micro_f1_excl" in steps[0]
        header = ["step", "w-F1", "acc"] + (["micro-F1 excl"] if has_excl else [])
        rows = []
        for row in steps:
            cells = [str(row["step"]), f"{row['weighted_f1']:.2f}", f"{row['accuracy']:.2f}"]
            if has_excl:
                cells.append(f"{row['micro_f1_excl']:.2f}")
            rows.append(cells)
        sections.append("Per-step scores (%)\n" + _table(header, rows))

    corrections = result.get("corrections")
    if corrections:
        header = ["steps", "changed", *(f"{k} %" for k in CORRECTION_KINDS),
                  *(f"{k} n" for k in CORRECTION_KINDS)]
        rows = [
            [
                f"{c['from']}->{c['to']}",
                str(c["changed"]),
                *(f"{c[k + '%']:.2f}" for k in CORRECTION_KINDS),
                *(str(c[k]) for k in CORRECTION_KINDS),
            ]
            for c in corrections
        ]
        sections.append("Corrections (share of changed predictions)\n" + _table(header, rows))

    matrix = final["confusion_matrix"]
    sections.append(
        "Confusion matrix (rows = gold, columns = predicted)\n"
        + _table(
            ["gold \\ pred", *labels],
            [[name, *(str(v) for v in row)] for name, row in zip(labels, matrix)],
        )
    )
    return "\n\n".join(sections) + "\n"
