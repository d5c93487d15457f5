#!/usr/bin/env python3
"""The baselines' optimiser grid on dev (issue 21): learning rate x batch size, seed 0, for the
five baselines of Tables 1-2 and the two-stage cLSTM / cLSTM+CRF, on MELD and IEMOCAP, with a
longer epoch cap than the presets' at the presets' patience (so that the cap does not decide
where a run stops; each run's ``stopped_by`` says whether it did).

Order: every dataset's CNN cells first; the dev-best CNN of a dataset is then the frozen stage 1
of that dataset's two-stage models (DialogueRNN, DialogueGCN, and the two-stage cLSTM /
cLSTM+CRF), as the presets' stage 1 is the dataset's CNN.  Only dev scores are read: the grid
chooses on dev; test is not looked at.

Resumable: a finished cell (its checkpoint exists) is skipped, a killed one resumed; the summary
``grid.json`` is rewritten after every cell.

    scripts/baseline_grid.py [--runs runs/grid] [--datasets meld iemocap] [--summary grid.json]

Two processes may share --runs when each takes one dataset and its own --summary; a last run over
both datasets (every cell skipped) then writes the combined grid.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

LRS = (5e-4, 1e-3, 2e-3)
#: batch sizes (dialogues a step): each dataset's default and four times it
BATCHES = {"meld": (8, 32), "iemocap": (4, 16)}
#: the paper presets' caps (meld-paper 100, iemocap-paper 150), at the baselines' patience
CAPS = {"meld": 100, "iemocap": 150}
#: grid models after the CNN: (name, preset <dataset>-<this>, two-stage on the dev-best CNN)
MODELS = (("clstm", "clstm-e2e", False), ("clstm_crf", "clstm_crf-e2e", False), ("clstm-2stage", "clstm", True),
          ("clstm_crf-2stage", "clstm_crf", True), ("dialoguernn", "dialoguernn", True),
          ("dialoguegcn", "dialoguegcn", True))


def cell_name(ds: str, model: str, lr: float, batch: int) -> str:
    return f"{ds}-{model}-lr{lr:g}-b{batch}-seed0"


def run_cell(args: argparse.Namespace, ds: str, model: str, preset: str, lr: float, batch: int,
             stage1: Path | None) -> dict:
    """Train one cell unless its checkpoint exists; return its dev result from the card."""
    out = args.runs / f"{cell_name(ds, model, lr, batch)}.safetensors"
    card = out.with_suffix(".json")
    if not out.exists():
        cmd = [args.iein, "train", "--dataset", ds, "--data-dir", f"{args.data}/{ds}", "--preset", f"{ds}-{preset}",
               "--seed", "0", "--threads", "1", "--set", f"train.lr={lr:g}", "--set", f"train.batch_size={batch}",
               "--set", f"train.max_epochs={CAPS[ds]}", "--out", str(out)]
        if stage1 is not None:
            cmd += ["--encoder-from", str(stage1)]
        if out.with_suffix(".resume.pt").exists():
            cmd.append("--resume")
        with open(out.with_suffix(".log"), "w") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        if rc != 0:
            sys.exit(f"{out}: iein train exited {rc}, see {out.with_suffix('.log')}")
    res = json.loads(card.read_text())
    return {"dataset": ds, "model": model, "lr": lr, "batch_size": batch, "two_stage": stage1 is not None,
            "stage1": str(stage1) if stage1 else None, "dev_wf1": res["dev"]["final"]["weighted_f1"],
            "best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"], "stopped_by": res.get("stopped_by"),
            "seconds_per_epoch": res.get("seconds_per_epoch"), "checkpoint": str(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/grid"))
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--datasets", nargs="+", default=["meld", "iemocap"])
    ap.add_argument("--iein", default=".venv/bin/iein")
    ap.add_argument("--summary", default="grid.json",
                    help="summary file in --runs (one per process when datasets run side by side)")
    args = ap.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    cells: list[dict] = []

    def record(cell: dict) -> None:
        cells.append(cell)
        (args.runs / args.summary).write_text(json.dumps(cells, indent=1) + "\n")

    best_cnn: dict[str, Path] = {}
    for ds in args.datasets:
        cnn = [run_cell(args, ds, "cnn", "cnn", lr, b, None) for lr in LRS for b in BATCHES[ds]]
        for c in cnn:
            record(c)
        # ties go to the earlier cell (smaller lr, then the default batch)
        best_cnn[ds] = Path(max(cnn, key=lambda c: c["dev_wf1"])["checkpoint"])
    for model, preset, two_stage in MODELS:
        for ds in args.datasets:
            for lr in LRS:
                for b in BATCHES[ds]:
                    record(run_cell(args, ds, model, preset, lr, b, best_cnn[ds] if two_stage else None))


if __name__ == "__main__":
    main()
