"""Render ``DIR/report.md``, ``DIR/figure3.png`` and ``DIR/confusion_<dataset>.png`` from
``DIR/runs.jsonl`` alone.

Every number of ours in the report is computed from the ``run`` lines (mean and sample
standard deviation over seeds, :func:`iein.evaluation.metrics.mean_std`); every number of the
paper's is one of the constants of :mod:`.paper`, each citing its table.  The "differences from
the paper" section is generated from both, so it cannot drift from the tables.

Where the code lives: :mod:`.runs_view` reads and selects the runs (:class:`Runs`, per-run
numbers); :mod:`.markdown` holds the formatting helpers; :mod:`.tables` renders the header,
Tables 1-5, Figure 3 and the confusion matrices; :mod:`.differences` the differences from the
paper.  This module keeps the run and time sections, :func:`render_report` (which assembles
them), and re-exports the names callers import from here.

Which runs a table uses: for every dataset and model, the setup (preset, encoder,
``--set`` overrides, quick; the run key's second part) of the latest plan that planned that
model on that dataset, so runs of another encoder in the same folder never mix in, and a
later ``--only`` invocation adds tables without hiding the ones already there.

Step numbering: our P^0 is the initial prediction (eq. 9) and P^i the i-th EC-Encoder pass
(eq. 10).  The paper's Tables 4 and 5 show steps 1..T for a model with maximum iteration
number T, i.e. they leave P^0 out; we show it and put the paper's step i beside our P^i.
"""
from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..utils import plural
from .plan import parse_key
from .paper import DATASET_TITLE
from .figures import plot_confusion, plot_figure3
from .replay import patience_what_if, time_profile
from .markdown import md_table, ms_text
from .runs_view import (
    PARTS,
    Runs,
    correction_summary,
    load_runs,
    mean_of,
    run_arch,
    run_corrections,
    run_part,
)
from .tables import (
    AHEAD_RULE,
    ahead_by_std,
    figure3_data,
    section_confusion,
    section_figure3,
    section_header,
    section_main,
    section_table3,
    section_table4,
    section_table5,
    stopped_by_cap,
)
from .differences import differences, section_differences


def section_runs(R: Runs) -> str:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in R.runs:
        groups[(r["dataset"], r["variant"], r["iterations"])].append(r)
    planned: dict[tuple[str, str, int], int] = defaultdict(int)
    baseline: set[tuple[str, str, int]] = {k for k, runs in groups.items() if run_arch(runs[0]) != "iein"}
    for k in R.planned_keys:
        part = parse_key(k)
        key = (part["dataset"], part["variant"], part["iterations"])
        planned[key] += 1
        if part["arch"] != "iein":
            baseline.add(key)
    rows = []
    for key in sorted(set(planned) | set(groups)):
        runs = groups.get(key, [])
        rows.append([
            f"{key[0]} {key[1]}" + ("" if key in baseline else f" T={key[2]}"), f"{len(runs)}/{planned.get(key, 0)}",
            ms_text([float(r["epochs_run"]) for r in runs]), ms_text([float(r["best_epoch"]) for r in runs]),
            ms_text([float(r.get("seconds_per_epoch", math.nan)) for r in runs if "seconds_per_epoch" in r]),
            ms_text([float(r["wall_seconds"]) / 60 for r in runs if "wall_seconds" in r]),
        ])
    return "## Runs\n\n" + md_table(["configuration", "done/planned", "epochs", "best epoch", "s/epoch",
                                     "min/run"], rows) + "\n"


def section_time(R: Runs) -> str:
    """The profile of the reproduction at the run level: compute per dataset and where it
    goes, and what early stopping's patience costs (replayed on the stored dev histories)."""
    rows, what_if = [], []
    total_all = sum(float(r.get("wall_seconds", 0.0)) for r in R.runs) or 1.0
    for d, part in ((d, part) for d in R.datasets for part in PARTS):
        runs = [r for r in R.runs if r["dataset"] == d and run_part(r) == part]
        if not runs:
            continue
        prof = time_profile(runs)
        tot = prof["total"] or 1.0
        by_t = defaultdict(list)
        for r in runs:
            if r["variant"] == "iein" and "seconds_per_epoch" in r:
                by_t[int(r["iterations"])].append(float(r["seconds_per_epoch"]))
        t_lo, t_hi = (min(by_t), max(by_t)) if by_t else (None, None)
        slope = (f"{mean_of(by_t[t_hi]) / mean_of(by_t[t_lo]):.2f}× (T={t_lo} → T={t_hi})"
                 if t_lo is not None and t_hi != t_lo else "—")
        rows.append([DATASET_TITLE.get(d, d), part, str(len(runs)), f"{prof['total'] / 3600:.2f}",
                     f"{100 * prof['total'] / total_all:.0f}%", f"{100 * prof['until_best'] / tot:.0f}%",
                     f"{100 * prof['after_best'] / tot:.0f}%", f"{100 * prof['other'] / tot:.0f}%", slope])
        by_patience: dict[int, list[dict[str, Any]]] = defaultdict(list)  # runs of one part may differ
        for r in runs:
            by_patience[int(r["train_config"].get("patience", 0))].append(r)
        for patience, group in sorted(by_patience.items()):
            for p in sorted({max(1, round(patience * f)) for f in (1 / 3, 1 / 2, 2 / 3)} - {patience}):
                w = patience_what_if(group, p)
                if not w["runs"]:
                    continue
                what_if.append([DATASET_TITLE.get(d, d), part, f"{p} (now {patience})", f"{w['same']}/{w['runs']}",
                                f"{w['dev_loss']:.2f}", f"{w['saved_pct']:.0f}%"])
    if not rows:
        return ""
    text = ["## Where the time goes", "",
            "Computed from the runs' own timings (wall seconds of each run, training seconds of each epoch). "
            "'After best' is early stopping's patience: epochs trained after the one finally selected on dev. "
            "'Other' is per-epoch dev evaluation, the final test prediction and each worker's one-off data "
            "preparation.", "",
            md_table(["dataset", "part", "runs", "compute h", "of all", "epochs ≤ best", "after best", "other",
                      "s/epoch growth with T"], rows), ""]
    if what_if:
        text += ["A smaller patience, replayed on the stored dev histories (same stopping rule, no retraining). "
                 "'Same model' counts runs whose selected epoch would not change — their test scores would be "
                 "identical; 'dev loss' is the mean dev w-F1 given up by the others. A smaller patience would "
                 "change the experiment, so it is not applied to this reproduction.", "",
                 md_table(["dataset", "part", "patience", "same model", "dev loss", "time saved"], what_if), ""]
    return "\n".join(text)


def render_report(out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.md``, ``figure3.png`` and ``confusion_<dataset>.png`` into ``out_dir``."""
    out = Path(out_dir)
    R = load_runs(out)
    plot_figure3(figure3_data(R), R.datasets, R.quick, out / "figure3.png")
    made = {}
    for d in R.datasets:
        runs = R.main(d)
        made[d] = bool(runs)
        if runs:
            plot_confusion([r["test"]["final"]["confusion_matrix"] for r in runs], R.ds[d]["labels"],
                           f"{DATASET_TITLE.get(d, d)} test, mean over {plural(len(runs), 'seed')}"
                           + (" (QUICK)" if R.quick else ""), out / f"confusion_{d}.png")
    sections = [section_header(R)]
    sections += [section_main(R, d) for d in R.datasets]
    sections += [section_table3(R), section_table4(R), section_table5(R), section_figure3(R),
                 section_confusion(R, made), section_differences(R), section_runs(R), section_time(R)]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(sections))
    return path


__all__ = [
    "AHEAD_RULE", "Runs",
    "ahead_by_std", "correction_summary", "differences", "load_runs", "render_report", "run_corrections",
    "stopped_by_cap",
]
