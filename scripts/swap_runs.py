#!/usr/bin/env python3
"""Replace one part of a committed reproduction by a rerun, keeping every line byte for byte.

    scripts/swap_runs.py --part baselines --into docs/results/runs.jsonl \
        --archive docs/results/archive/runs-baselines-before-grid.jsonl runs/rerun/meld runs/rerun/iemocap

The lines of the part (``baselines``: runs of any model but IEIN, and the plan and session
lines of the invocations that planned no IEIN run) move to ``--archive`` with the dataset
lines, so the archive stays a valid ``runs.jsonl`` (``iein report`` renders it).  The rerun
folders' plan, run and session lines are appended in their order; their dataset lines must
equal the committed ones (same files, splits and labels), else nothing is written.  Both files
are written atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from iein.atomic import atomic_write_text


def _lines(path: Path) -> list[tuple[str, dict]]:
    out = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            out.append((raw, json.loads(raw)))
        except json.JSONDecodeError as exc:
            sys.exit(f"{path}:{n}: not a JSON line ({exc})")
    return out


def _in_part(rec: dict, part_sessions: set[str]) -> bool:
    if rec["kind"] == "run":
        return rec.get("arch", "iein") != "iein"
    return rec["kind"] in ("plan", "session_end") and rec.get("session") in part_sessions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["baselines"], required=True)
    ap.add_argument("--into", type=Path, required=True)
    ap.add_argument("--archive", type=Path, required=True)
    ap.add_argument("reruns", type=Path, nargs="+", help="rerun folders (their runs.jsonl)")
    args = ap.parse_args()
    if args.archive.exists():
        sys.exit(f"{args.archive}: exists; choose another archive name")
    old = _lines(args.into)
    part_sessions = {r["session"] for _, r in old if r["kind"] == "plan"
                     and not any(len(k.split("/")) == 5 for k in r["keys"])}
    datasets = {r["dataset"]: r for _, r in old if r["kind"] == "dataset"}
    new: list[str] = []
    for folder in args.reruns:
        for raw, rec in _lines(folder / "runs.jsonl"):
            if rec["kind"] == "dataset":
                if rec != datasets.get(rec["dataset"]):
                    sys.exit(f"{folder}/runs.jsonl: dataset line of {rec['dataset']} differs from {args.into}'s")
                continue
            if rec["kind"] == "run" and rec.get("arch", "iein") == "iein":
                sys.exit(f"{folder}/runs.jsonl: holds IEIN run {rec['key']}, not part {args.part}")
            new.append(raw)
    keep = [raw for raw, rec in old if not _in_part(rec, part_sessions)]
    moved = [raw for raw, rec in old if rec["kind"] == "dataset" or _in_part(rec, part_sessions)]
    atomic_write_text(args.archive, "".join(line + "\n" for line in moved))
    atomic_write_text(args.into, "".join(line + "\n" for line in keep + new))
    n_old = sum(1 for _, r in old if r["kind"] == "run" and _in_part(r, part_sessions))
    n_new = sum(1 for line in new if json.loads(line)["kind"] == "run")
    print(f"{args.into}: {n_old} runs of part {args.part} moved to {args.archive}, {n_new} appended")


if __name__ == "__main__":
    main()
