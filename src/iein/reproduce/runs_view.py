"""Reading and selecting runs: the lines of one ``runs.jsonl`` indexed for the report
(:class:`Runs`), and the per-run numbers every section reads (final w-F1, step predictions,
corrections between steps).

It exists so that the report's sections (:mod:`.tables`, :mod:`.differences`) share one view of
which runs a table uses (see :mod:`.report`) and never re-read the records themselves.
"""
from __future__ import annotations

import functools
import os
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from ..evaluation.metrics import correction_counts, mean_std
from ..training.config import BASELINES
from .plan import DEFAULT_SEEDS_BASELINES, parse_key
from .paper import BASELINE_NAME
from .records import decode_dialogues, read_records, runs_path, upgrade_record

#: The kinds of changed prediction between adjacent steps (Table 4), in report order.
KINDS = ("R->W", "W->R", "W->W")


# --------------------------------------------------------------------------------------------
# reading and selecting


class Runs:
    """The lines of one ``runs.jsonl``, indexed for the report."""

    def __init__(self, records: Sequence[dict[str, Any]]) -> None:
        plans = [r for r in records if r["kind"] == "plan"]
        if not plans:
            raise ValueError("runs.jsonl has no plan line (it was not written by `iein reproduce`)")
        self.plans = plans
        self.plan = plans[-1]
        self.quick = bool(self.plan.get("quick"))
        same = [p for p in plans if bool(p.get("quick")) == self.quick]
        named = list(dict.fromkeys(d for p in same for d in p["datasets"]))
        self.datasets: list[str] = [d for d in ("iemocap", "meld") if d in named] + [
            d for d in named if d not in ("iemocap", "meld")]
        # (dataset, model) -> setup, the latest plan's that planned it (see the module doc)
        self.setups: dict[tuple[str, str], str] = {}
        for p in same:
            for key in p["keys"]:
                part = parse_key(key)
                self.setups[(part["dataset"], part["arch"])] = part["setup"]
        iein_plans = [p for p in same if any(parse_key(k)["arch"] == "iein" for k in p["keys"])] or same
        main_plan = iein_plans[-1]
        self.presets: dict[str, str] = {}
        self.main_t: dict[str, int] = {}
        for p in iein_plans:
            self.presets.update(p["presets"])
            self.main_t.update({k: int(v) for k, v in p["main_iterations"].items()})
        self.seeds_main = int(main_plan["seeds_main"])
        self.seeds_ablation = int(main_plan["seeds_ablation"])
        base_plans = [p for p in same if any(parse_key(k)["arch"] != "iein" for k in p["keys"])]
        self.seeds_baselines = int(base_plans[-1].get("seeds_baselines", DEFAULT_SEEDS_BASELINES)) \
            if base_plans else DEFAULT_SEEDS_BASELINES
        self.ds: dict[str, dict[str, Any]] = {}
        for r in records:
            if r["kind"] == "dataset" and bool(r.get("quick")) == self.quick:
                self.ds[r["dataset"]] = r
        self.runs = [r for r in records if r["kind"] == "run" and bool(r.get("quick")) == self.quick
                     and self.setups.get((r["dataset"], run_arch(r))) == parse_key(r["key"])["setup"]]
        #: every key planned in the setups above, by any invocation (first-planned order)
        self.planned_keys: list[str] = []
        for key in dict.fromkeys(k for p in same for k in p["keys"]):
            part = parse_key(key)
            if self.setups.get((part["dataset"], part["arch"])) == part["setup"]:
                self.planned_keys.append(key)
        self.sessions = {r["session"]: r for r in records if r["kind"] == "session_end"}
        self.all_records = records

    def select(self, dataset: str, variant: str, iterations: int | None, max_seed: int) -> list[dict[str, Any]]:
        out = [r for r in self.runs if r["dataset"] == dataset and run_arch(r) == "iein" and r["variant"] == variant
               and (iterations is None or r["iterations"] == iterations) and r["seed"] < max_seed]
        return sorted(out, key=lambda r: r["seed"])

    def baseline(self, dataset: str, arch: str) -> list[dict[str, Any]]:
        """The finished runs of a baseline model (seeds ``0 .. seeds_baselines-1``)."""
        out = [r for r in self.runs if r["dataset"] == dataset and run_arch(r) == arch
               and r["seed"] < self.seeds_baselines]
        return sorted(out, key=lambda r: r["seed"])

    def baseline_archs(self, dataset: str) -> list[str]:
        """The paper's baselines, then any other model with runs, in a fixed order."""
        extra = sorted({run_arch(r) for r in self.runs if r["dataset"] == dataset} - {"iein", *BASELINES})
        return list(BASELINES) + extra

    def encoders_of(self, dataset: str, archs: Sequence[str]) -> str:
        """Which encoder each of ``archs`` ran on, grouped: "`glove-cnn` (CNN, cLSTM); ..." (one
        encoder alone is named without its models)."""
        groups: dict[str, list[str]] = defaultdict(list)
        for arch in archs:
            groups[self.encoder_text(dataset, arch) or "?"].append(BASELINE_NAME.get(arch, arch))
        if len(groups) == 1:
            return next(iter(groups))
        return "; ".join(f"{enc} for {', '.join(names)}" for enc, names in groups.items())

    def encoder_text(self, dataset: str, arch: str) -> str | None:
        """The encoder of a model's runs on a dataset (and the ``--set`` overrides, if any),
        as markdown; None without runs."""
        runs = [r for r in self.runs if r["dataset"] == dataset and run_arch(r) == arch]
        if not runs:
            return None
        def name(r: dict[str, Any]) -> str:
            first = r.get("stage1")
            if first:  # two-stage: the encoder that made the (frozen) vectors
                return f"`{first['encoder']}` (two-stage: trained as `{first['arch']}`, then frozen)"
            return f"`{upgrade_record(r)['encoder']}`"

        names = sorted({name(r) for r in runs})
        sets = sorted({", ".join(r.get("overrides") or ()) for r in runs} - {""})
        return ", ".join(names) + (f" (--set {'; '.join(sets)})" if sets else "")

    def main(self, dataset: str) -> list[dict[str, Any]]:
        """The main model's runs on ``dataset`` (none when no plan gave it a main T: a folder
        of baselines on another dataset)."""
        if dataset not in self.main_t:
            return []
        return self.select(dataset, "iein", self.main_t[dataset], self.seeds_main)

    def ablation(self, dataset: str, variant: str, iterations: int | None) -> list[dict[str, Any]]:
        return self.select(dataset, variant, iterations, self.seeds_ablation)

    @functools.cached_property
    def invocations(self) -> dict[str, tuple[float, frozenset[str]]]:
        """Each invocation's wall time (a finished one's own measure; a killed one's up to its
        last finished run: the run it was killed in is not counted) and the parts
        (:func:`run_part`) of its runs."""
        seconds: dict[str, float] = {}
        parts: dict[str, set[str]] = defaultdict(set)
        for r in self.all_records:
            if r["kind"] == "run" and "session" in r:
                sid = r["session"]
                seconds[sid] = max(seconds.get(sid, 0.0), float(r.get("session_elapsed", 0.0)))
                parts[sid].add(run_part(r))
        for sid, r in self.sessions.items():
            seconds[sid] = float(r["wall_seconds"])
        return {sid: (sec, frozenset(parts.get(sid, ()))) for sid, sec in seconds.items()}

    def part_sessions(self, part: str | None = None) -> dict[str, float]:
        """Wall seconds of the invocations whose runs are all of one ``part``, or of all."""
        return {sid: sec for sid, (sec, parts) in self.invocations.items() if part is None or parts == {part}}

    def wall_seconds(self, part: str | None = None) -> float:
        return sum(self.part_sessions(part).values())


def run_arch(run: dict[str, Any]) -> str:
    """The model of a run record (records written before baselines were planned are IEIN's)."""
    return str(run.get("arch", "iein"))


#: The parts of a reproduction (:func:`run_part`), in report order.
PARTS = ("IEIN", "baselines")


def run_part(run: dict[str, Any]) -> str:
    """Which part of the reproduction a run belongs to: ``"IEIN"`` (main model, Table 3,
    Figure 3) or ``"baselines"``; the parts are run, timed and early-stopped separately."""
    return "IEIN" if run_arch(run) == "iein" else "baselines"


def load_runs(out_dir: str | os.PathLike[str]) -> Runs:
    path = runs_path(out_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no runs.jsonl (run `iein reproduce --out {out_dir}` first)")
    return Runs(read_records(path, repair=False, log=lambda _m: None))


# --------------------------------------------------------------------------------------------
# numbers


def final_wf1(run: dict[str, Any]) -> float:
    return float(run["test"]["final"]["weighted_f1"])


def mean_of(values: Sequence[float]) -> float | None:
    return mean_std(values)[0] if values else None


def gold_by_dialogue(dataset_record: dict[str, Any]) -> dict[str, list[int]]:
    return dict(zip(dataset_record["test_dialogues"], decode_dialogues(dataset_record["test_gold"])))


def step_predictions(run: dict[str, Any]) -> list[dict[str, list[int]]]:
    """Per step, ``{dialogue id: predicted label ids}`` from the compact strings of a run."""
    ids = run["test_predictions"]["dialogues"]
    return [dict(zip(ids, decode_dialogues(s))) for s in run["test_predictions"]["steps"]]


def run_corrections(run: dict[str, Any], gold: dict[str, list[int]]) -> list[dict[str, Any]]:
    """R->W / W->R / W->W between every pair of adjacent steps of one run, recomputed from its
    stored test predictions and the dataset's gold labels (unlabelled utterances skipped)."""
    steps = step_predictions(run)
    ids = run["test_predictions"]["dialogues"]
    g = np.array([x for d in ids for x in gold[d]], dtype=np.int64)
    keep = g >= 0
    flat = [np.array([x for d in ids for x in s[d]], dtype=np.int64)[keep] for s in steps]
    return [{"from": i, "to": i + 1, **correction_counts(flat[i], flat[i + 1], g[keep])}
            for i in range(len(flat) - 1)]


def correction_summary(runs: Sequence[dict[str, Any]], gold: dict[str, list[int]]) -> list[dict[str, Any]]:
    """Per adjacent pair: the shares of each kind, mean and std over the seeds whose
    predictions changed at all, and the mean number of changed predictions."""
    per_run = [run_corrections(r, gold) for r in runs]
    out = []
    for i in range(min((len(c) for c in per_run), default=0)):
        rows = [c[i] for c in per_run]
        changed = [row for row in rows if row["changed"] > 0]
        out.append({
            "from": i, "to": i + 1,
            "changed": [float(row["changed"]) for row in rows],
            **{k: [float(row[f"{k}%"]) for row in changed] for k in KINDS},
        })
    return out
