"""`iein reproduce` with the paper's baselines, `--only`, `--encoder`/`--set`, the time estimate,
and the report's baseline rows (Tables 1-2) and vectors-vs-model estimate.

The report tests write a small runs.jsonl by hand (IEIN and baseline runs whose weighted F1
is chosen), so every verdict the report prints is known in advance.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from iein.cli import main
from iein.errors import ConfigError
from iein.evaluation.metrics import evaluate_steps, format_mean_std, mean_std
from iein.models.registry import get_model_class
from iein.reproduce.plan import (FALLBACK_MINUTES, QUICK_RUN_MINUTES, RunSpec, build_plan, estimate, parse_key)
from iein.reproduce.paper import PAPER_TABLE2_BASELINES, PAPER_TABLE2_MELD
from iein.reproduce.report import AHEAD_RULE, ahead_by_std, load_runs, render_report, stopped_by_cap
from iein.training.early_stopping import cap_of, cut_by_cap
from iein.reproduce.records import append_record, encode_dialogues, read_records
from iein.reproduce.runner import same_config
from iein.training.config import BASELINES

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "docs" / "results" / "runs.jsonl"
MELD_LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]


# --------------------------------------------------------------------------------------------
# the plan


def test_default_plan_has_the_five_baselines_seed_major():
    plan = build_plan("all", seeds_main=12, seeds_ablation=5)
    keys = [s.key for s in plan]
    assert len(keys) == len(set(keys))
    base = [s for s in plan if s.is_baseline]
    # IEIN as before (2 x 47) plus 5 baselines x 5 seeds x 2 datasets
    assert len(plan) == 2 * (12 + 5 * 5 + 5 + 5) + 50 and len(base) == 50
    assert "meld/meld-dialoguernn/dialoguernn/seed0" in keys and "iemocap/iemocap-cnn/cnn/seed4" in keys
    assert "meld/meld/iein/T2/seed0" in keys  # IEIN keys unchanged
    assert {s.arch for s in base} == set(BASELINES) and {s.seed for s in base} == set(range(5))
    assert all(s.roles == ("baselines",) and s.preset == f"{s.dataset}-{s.arch}" for s in base)
    # seed-major: every run of seed k comes before any run of seed k + 1
    seeds = [s.seed for s in plan]
    assert seeds == sorted(seeds)
    exp = next(s for s in base if s.arch == "dialoguernn").experiment()
    assert (exp.arch, exp.encoder) == ("dialoguernn", "glove-cnn") and "variant" not in exp.model
    assert build_plan("meld", 2, 2, seeds_baselines=3, baselines=("cnn",))[-1].key == "meld/meld-cnn/cnn/seed2"
    assert not any(s.is_baseline for s in build_plan("meld", 2, 2, baselines=()))


def test_quick_shrinks_every_model_and_encoder():
    plan = build_plan("all", 2, 2, quick=True)
    assert {s.seed for s in plan if s.is_baseline} == {0, 1}  # --quick: 2 seeds for the baselines too
    for spec in [s for s in plan if s.seed == 0 and s.variant in ("iein", *BASELINES)]:
        exp = spec.experiment()
        cls = get_model_class(exp.arch).config_class
        cfg = cls.from_dict(exp.model)
        # every size field (an int default of 32 or more: hidden sizes, state sizes) is shrunk
        sizes = [f.name for f in cls.__dataclass_fields__.values()
                 if type(f.default) is int and f.default >= 32 and f.name != "n_labels"]
        assert sizes or exp.arch == "cnn"
        assert all(getattr(cfg, name) <= 8 for name in sizes), (exp.arch, exp.model)
        if exp.encoder == "glove-cnn":
            assert exp.encoder_config["n_filters"] == 8 and exp.encoder_config["output_size"] == 8
        else:
            assert exp.encoder_config["hidden"] == 8
        assert exp.train.max_epochs == 1
        assert spec.key.split("/")[1].endswith("+quick")


def test_only_selects_roles_and_models():
    full = build_plan("meld", 12, 5)
    by = lambda only: [s.key for s in build_plan("meld", 12, 5, only=only)]
    assert by("baselines") == [s.key for s in full if s.is_baseline]
    assert by("dialoguernn,clstm") == [s.key for s in full if s.arch in ("dialoguernn", "clstm")]
    assert by("main") == [f"meld/meld/iein/T2/seed{i}" for i in range(12)]
    assert by("iein") == [s.key for s in full if not s.is_baseline]
    union = by(["table3", "cnn"])
    assert set(union) == {s.key for s in full if "table3" in s.roles or s.arch == "cnn"}
    assert "meld/meld/iein/T5/seed0" not in union  # Figure 3 only
    assert set(by("main,table3,figure3,baselines")) == {s.key for s in full}
    with pytest.raises(ConfigError, match="--only bogus"):
        build_plan("meld", only="main,bogus")


def test_encoder_and_set_give_their_own_keys():
    iein_t = lambda plan: next(s for s in plan if s.key.endswith("/iein/T2/seed0"))
    cnn0 = lambda plan: next(s for s in plan if s.arch == "cnn" and s.seed == 0)
    default = build_plan("meld", 1, 1, seeds_baselines=1)
    trans = build_plan("meld", 1, 1, seeds_baselines=1, encoder="transformer")
    assert iein_t(trans).key == "meld/meld+transformer/iein/T2/seed0"
    assert cnn0(trans).key == "meld/meld-cnn+transformer/cnn/seed0"
    assert iein_t(trans).experiment().encoder == "transformer"
    # glove-cnn is the baselines' own encoder: their keys stay, IEIN's change
    cnn_enc = build_plan("meld", 1, 1, seeds_baselines=1, encoder="glove-cnn")
    assert cnn0(cnn_enc).key == cnn0(default).key and iein_t(cnn_enc).key == "meld/meld+glove-cnn/iein/T2/seed0"
    assert build_plan("meld", 1, 1, encoder="glove-bigru")[0].key == default[0].key
    # --set: canonical, in the key, applied to every run
    mini = build_plan("meld", 1, 1, seeds_baselines=1, encoder="transformer", overrides=["encoder.model=minilm"])
    mpnet = build_plan("meld", 1, 1, seeds_baselines=1, encoder="transformer", overrides=['encoder.model="mpnet"'])
    assert iein_t(mini).key == "meld/meld+transformer[encoder.model=minilm]/iein/T2/seed0"
    assert iein_t(mpnet).key == "meld/meld+transformer[encoder.model=mpnet]/iein/T2/seed0"
    assert cnn0(mpnet).experiment().encoder_config["model"] == "mpnet"
    keys = {s.key for s in default} | {s.key for s in trans} | {s.key for s in mini} | {s.key for s in mpnet}
    assert len(keys) == 4 * len(default)
    odd = build_plan("meld", 1, 1, only="main", encoder="transformer", overrides=["encoder.model=/models/my bert"])
    assert len(odd[0].key.split("/")) == 5 and re.search(r"\[set-[0-9a-f]{8}\]", odd[0].key)
    # a setting one planned model lacks fails at plan time, naming it; the plan decides T and seeds
    with pytest.raises(ConfigError, match=r"cnn.*lam.*--only"):
        build_plan("meld", 1, 1, overrides=["lam=3"])
    assert build_plan("meld", 1, 1, only="iein", overrides=["lam=3"])[0].experiment().model["lam"] == 3
    for key in ("iterations", "model.variant", "seed"):
        with pytest.raises(ConfigError, match="reproduce sets"):
            build_plan("meld", 1, 1, overrides=[f"{key}=1"])


def test_runspec_roundtrip_and_key_parsing():
    for spec in build_plan("meld", 1, 1, seeds_baselines=1, encoder="glove-cnn", overrides=["train.lr=0.002"]):
        assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
        part = parse_key(spec.key)
        assert (part["dataset"], part["arch"], part["seed"]) == (spec.dataset, spec.arch, spec.seed)
        assert part["setup"] == spec.setup


def test_old_format_records_still_match_their_specs(monkeypatch):
    """The first reproduction's records (written before models were components; archived when
    the patience rule's rerun replaced them) still match: every run matches the default plan's
    spec of the same key at the patience it ran with, and a changed setting is still caught."""
    import dataclasses

    from iein.training import config as config_module

    # the 94 IEIN runs of the first reproduction
    runs = [r for r in read_records(COMMITTED.parent / "archive" / "runs-patience-6-15.jsonl")
            if r["kind"] == "run" and "arch" not in r]
    assert len(runs) == 94
    # they ran at the patience before the patience rule (MELD 6, IEMOCAP 15): today's presets
    # refuse them, naming the setting ...
    plan = {s.key: s for s in build_plan("all")}
    meld_run = next(r for r in runs if r["dataset"] == "meld")
    assert "patience 6 -> 4" in same_config(meld_run, plan[meld_run["key"]])
    # ... and with the old patience every other setting still matches
    for name, patience in config_module._MEASURED_PATIENCE.items():
        old = config_module.PRESETS[name]
        monkeypatch.setitem(config_module.PRESETS, name,
                            dataclasses.replace(old, train=dict(old.train, patience=patience)))
    plan = {s.key: s for s in build_plan("all")}
    for rec in runs[:3] + runs[-3:]:
        assert same_config(rec, plan[rec["key"]]) is None
    assert all(r["key"] in plan for r in runs)
    changed = json.loads(json.dumps(runs[0]))
    changed["train_config"]["lr"] = 0.5
    assert "lr" in same_config(changed, plan[changed["key"]])


# --------------------------------------------------------------------------------------------
# the time estimate


def _timed(key: str, seconds: float) -> dict:
    return {"kind": "run", "key": key, "wall_seconds": seconds}


def test_estimate_uses_this_folders_minutes_then_the_table():
    plan = build_plan("meld", 4, 1, only="main,cnn", seeds_baselines=2)
    assert [s.key for s in plan] == ["meld/meld/iein/T2/seed0", "meld/meld-cnn/cnn/seed0", "meld/meld/iein/T2/seed1",
                                     "meld/meld-cnn/cnn/seed1", "meld/meld/iein/T2/seed2", "meld/meld/iein/T2/seed3"]
    records = [_timed("meld/meld/iein/T2/seed0", 120.0), _timed("meld/meld/iein/T2/seed1", 240.0),
               _timed("meld/meld/iein/T5/seed0", 6000.0),  # another configuration: not used
               _timed("meld/meld+glove-cnn/iein/T2/seed9", 6000.0),  # another encoder: not used
               {"kind": "plan", "keys": []}]
    cnn = FALLBACK_MINUTES[("meld", "cnn")]
    assert cnn > 0
    # to do: IEIN seeds 2, 3 (3 min each, the mean of 2 and 4 min) and cnn seeds 0, 1 (table)
    est = estimate(plan, records, workers=2)
    assert (est.todo, est.done, est.measured, est.from_table) == (4, 2, 2, 2)
    assert est.minutes == pytest.approx(max((3 + 3 + 2 * cnn) / 2, 3, cnn))
    line = est.line()
    assert line.startswith("plan: 4 runs to do (2 done), about ") and "with 2 workers" in line
    # one process: the sum; the pool never beats its longest run; --max-runs counts
    assert estimate(plan, records, workers=0).minutes == pytest.approx(6 + 2 * cnn)
    assert "in this process" in estimate(plan, records, workers=0).line()
    assert estimate(plan, records, workers=64).minutes == pytest.approx(max(3, cnn))
    assert estimate(plan, records, workers=1, max_runs=1).minutes == pytest.approx(cnn)  # cnn seed0 is first
    quick = build_plan("meld", 2, 2, quick=True, only="baselines")
    assert estimate(quick, [], workers=1).minutes == pytest.approx(10 * QUICK_RUN_MINUTES)
    assert estimate(plan, [_timed(s.key, 60.0) for s in plan], 2).line() == "plan: nothing to do (6 done)"
    # another encoder: the table (GloVe encoders) only guesses, and says so
    trans = build_plan("meld", 1, 1, seeds_baselines=1, only="main,cnn", encoder="transformer")
    assert "not transformer: a guess" in estimate(trans, [], 1).line()
    assert "a guess" not in line


def test_estimate_only_on_the_committed_reproduction(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch):
    import dataclasses

    from iein.training import config as config_module

    out = tmp_path / "results"
    out.mkdir()
    records = read_records(COMMITTED)
    baseline_runs = [r for r in records if r["kind"] == "run" and r.get("arch", "iein") != "iein"]
    assert len(baseline_runs) == 50
    # the committed folder minus its last 3 baseline runs: those are priced by the folder's runs
    dropped = {r["key"] for r in baseline_runs[-3:]}
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records if r.get("key") not in dropped))
    before = (out / "runs.jsonl").read_bytes()
    assert main(["reproduce", "--out", str(out), "--estimate-only", "--workers", "2", "--only", "baselines"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("plan: 3 runs to do (47 done), about ") and "with 2 workers" in line
    assert "priced by this folder" in line
    # its IEIN runs were trained under today's presets (the patience rule): all of them count
    assert main(["reproduce", "--out", str(out), "--estimate-only", "--workers", "2"]) == 0
    assert capsys.readouterr().out.startswith("plan: 3 runs to do (141 done)")
    # the archived IEIN runs predate the patience rule: the estimate refuses them as a start
    # would, in one line naming the setting
    old_out = tmp_path / "archive"
    old_out.mkdir()
    (old_out / "runs.jsonl").write_bytes((COMMITTED.parent / "archive" / "runs-patience-6-15.jsonl").read_bytes())
    assert main(["reproduce", "--out", str(old_out), "--estimate-only", "--only", "iein"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained with other settings" in err[0] and "patience" in err[0]
    # with the patience they ran at, every archived IEIN run counts as done
    for name, patience in config_module._MEASURED_PATIENCE.items():
        old = config_module.PRESETS[name]
        monkeypatch.setitem(config_module.PRESETS, name,
                            dataclasses.replace(old, train=dict(old.train, patience=patience)))
    assert main(["reproduce", "--out", str(old_out), "--estimate-only", "--only", "main,table3,figure3"]) == 0
    assert capsys.readouterr().out.startswith("plan: nothing to do (94 done)")
    assert (out / "runs.jsonl").read_bytes() == before  # read only
    assert sorted(p.name for p in out.iterdir()) == ["runs.jsonl"]  # no lock, no report


# --------------------------------------------------------------------------------------------
# the report: baseline rows beside the paper's, the > std verdict, vectors vs model


def _run(key: str, wf1: float, per_class: dict[str, float], gold: list[list[int]], ids: list[str],
         rng: np.random.Generator, **extra) -> dict:
    part = parse_key(key)
    flat = np.concatenate([np.array(g) for g in gold])
    n_steps = part["iterations"] + 1 if part["arch"] == "iein" else 1
    steps = [np.where(rng.random(flat.size) < 0.6, flat, rng.integers(0, 7, flat.size)) for _ in range(n_steps)]
    test = evaluate_steps(steps, flat, MELD_LABELS)
    test["final"]["weighted_f1"] = wf1  # chosen: the verdicts below are known in advance
    test["final"]["per_class_f1"] = dict(per_class)
    lengths = np.cumsum([0] + [len(g) for g in gold])
    split = lambda a: [a[lengths[i]:lengths[i + 1]].tolist() for i in range(len(gold))]
    rec = {
        "kind": "run", "key": key, "dataset": "meld", "preset": part["setup"].split("+")[0],
        "variant": part["variant"], "iterations": part["iterations"], "seed": part["seed"], "quick": False,
        "roles": [], "arch": part["arch"],
        "encoder": "glove-bigru" if part["arch"] == "iein" else "glove-cnn", "encoder_config": {},
        "model_config": {}, "train_config": {"lr": 1e-3, "patience": 6, "min_epochs": 0},
        "best_epoch": 3, "epochs_run": 9,
        "history": [{"epoch": e, "dev_score": 50.0 + min(e, 3), "seconds": 5.0} for e in range(1, 10)],
        "dev": test, "test": test,
        "test_predictions": {"dialogues": ids, "steps": [encode_dialogues(split(s)) for s in steps]},
        "embeddings": {"name": "glove-6b-50d", "dim": 50, "source": "kumo"}, "coverage": {},
        "versions": {"iein": "0.1.0", "torch": "2.x", "numpy": "2.x"},
        "seconds_per_epoch": 5.0, "wall_seconds": 50.0, "session": "s1", "session_elapsed": 60.0,
    }
    rec.update(extra)
    return rec


#: Chosen weighted F1 per model and seed: IEIN 61 ± 1; CNN far below (ahead: yes);
#: DialogueRNN within IEIN's std (no); DialogueGCN above IEIN (behind).
WF1 = {"iein": [60.0, 61.0, 62.0], "cnn": [55.0, 55.5, 56.0], "dialoguernn": [60.5, 61.0, 61.5],
       "dialoguegcn": [64.0, 64.5, 65.0]}


@pytest.fixture()
def baseline_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    gold = [rng.integers(0, 7, n).tolist() for n in (5, 7, 6)]
    ids = ["d0", "d1", "d2"]
    per_class = lambda arch, seed: {lab: 10.0 * i + seed + len(arch) for i, lab in enumerate(MELD_LABELS)}
    keys = {"iein": [f"meld/meld/iein/T2/seed{s}" for s in range(3)]}
    for arch in ("cnn", "dialoguernn", "dialoguegcn"):
        keys[arch] = [f"meld/meld-{arch}/{arch}/seed{s}" for s in range(3)]
    runs = [_run(k, WF1[arch][i], per_class(arch, i), gold, ids, rng) for arch, ks in keys.items()
            for i, k in enumerate(ks)]
    # an earlier invocation on another encoder: same model, other setup -- must not mix in
    stale = _run("meld/meld-cnn+transformer/cnn/seed0", 99.0, per_class("x", 0), gold, ids, rng, encoder="transformer")
    dataset = {"kind": "dataset", "dataset": "meld", "quick": False, "labels": MELD_LABELS,
               "data_files": {"x.csv": "ab" * 32}, "data_checksums": {"test": "cd" * 32},
               "sizes": {"test": [3, 18]}, "test_dialogues": ids, "test_gold": encode_dialogues(gold),
               "case_study": None}
    plan = lambda keys_, session, **kw: {
        "kind": "plan", "session": session, "datasets": ["meld"], "presets": {"meld": "meld"},
        "main_iterations": {"meld": 2}, "seeds_main": 3, "seeds_ablation": 3, "quick": False, "keys": keys_,
        "workers": 1, "threads_per_worker": 1, "machine": {}, **kw}
    path = tmp_path / "runs.jsonl"
    for rec in [dataset, plan([stale["key"]], "s0", seeds_baselines=3), stale,
                plan(keys["iein"], "s1"), *runs[:3],
                plan([k for a in ("cnn", "dialoguernn", "dialoguegcn") for k in keys[a]], "s2", seeds_baselines=3),
                *runs[3:]]:
        append_record(path, rec)
    return tmp_path


def _row(md: str, start: str) -> list[str]:
    line = next(l for l in md.splitlines() if l.startswith(f"| {start}"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_ahead_by_std_rule():
    assert ahead_by_std([60, 61, 62], [55, 55.5, 56])[0] == "ahead"
    assert ahead_by_std([60, 61, 62], [60.5, 61, 61.5])[0] == "within"
    assert ahead_by_std([60, 61, 62], [64, 64.5, 65])[0] == "behind"
    # the difference must exceed the std of *both*: 2.0 > IEIN's 1.0 but not the other's 3.0
    assert ahead_by_std([60, 61, 62], [56, 59, 62])[0] == "within"
    assert ahead_by_std([61.0], [50.0, 51.0])[0] == "unknown"


def test_report_puts_our_baselines_beside_the_papers(baseline_dir: Path):
    R = load_runs(baseline_dir)
    assert len(R.runs) == 12 and not any(r["key"].startswith("meld/meld-cnn+") for r in R.runs)
    md = (render_report(baseline_dir)).read_text()
    table = md.split("## Table 2")[1].split("## Table 3")[0]
    # the paper's baseline rows (Table 2), all five, whether run or not
    for arch, name in (("cnn", "CNN"), ("clstm", "cLSTM"), ("dialoguegcn", "DialogueGCN")):
        assert _row(table, f"{name}, paper (Table 2)")[1:] == [f"{v:.2f}" for v in PAPER_TABLE2_BASELINES[arch].values()]
    assert "cLSTM, ours" not in table  # not run
    # ours: mean ± std per class and w-Avg, seed count and encoder in the row name
    runs = load_runs(baseline_dir).baseline("meld", "dialoguernn")
    row = _row(table, "DialogueRNN, ours (`glove-cnn`, 3 seeds)")
    for col, cell in zip(MELD_LABELS, row[1:]):
        assert cell == format_mean_std([r["test"]["final"]["per_class_f1"][col] for r in runs])
    assert row[-1] == format_mean_std(WF1["dialoguernn"]) == "61.00 ± 0.50"
    gap = _row(table, "DialogueRNN: ours − paper")
    assert gap[-1] == f"{61.0 - PAPER_TABLE2_BASELINES['dialoguernn']['w-Avg.']:+.2f}"
    assert _row(table, "IEIN, ours (T=2, 3 seeds)")[-1] == "61.00 ± 1.00"
    # IEIN against each baseline: the verdict column and the rule
    assert _row(table, "CNN | ")[-1].startswith("yes (+5.50 > std 1.00)")
    assert _row(table, "DialogueRNN | ")[-1] == "no, within the std (+0.00, std 1.00)"
    assert _row(table, "DialogueGCN | ")[-1].startswith("no, behind (-3.50")
    assert _row(table, "CNN | ")[5] == f"{PAPER_TABLE2_MELD['w-Avg.'] - PAPER_TABLE2_BASELINES['cnn']['w-Avg.']:+.2f}"
    assert AHEAD_RULE in table and "IEIN on `glove-bigru` utterance features" in table
    # differences: the verdicts, and the vectors-vs-model estimate with its numbers
    diff = md.split("## Differences from the paper")[1].split("## Runs")[0]
    assert "IEIN is not ahead of DialogueRNN, DialogueGCN by more than the seed std" in diff
    paper_b = PAPER_TABLE2_BASELINES
    gb = np.mean([mean_std(WF1[a])[0] - paper_b[a]["w-Avg."] for a in ("cnn", "dialoguernn", "dialoguegcn")])
    gi = 61.0 - PAPER_TABLE2_MELD["w-Avg."]
    bullet = next(l for l in diff.splitlines() if "vectors vs model" in l)
    assert f"the baselines' w-F1 is {gb:+.2f} from the paper's on average (3 models" in bullet
    assert f"IEIN's {gi:+.2f}" in bullet and f"IEIN's gap of {gi:+.2f} splits into {gb:+.2f} from the vectors" in bullet
    assert f"and {gi - gb:+.2f} of IEIN's own" in bullet and "Assuming" in bullet and "estimate" in bullet
    # header and the runs table name the baselines without a T
    assert "| encoders | `glove-bigru`: MELD IEIN; `glove-cnn`: MELD CNN, MELD DialogueRNN, MELD DialogueGCN |" in md
    assert "| meld dialoguernn | 3/3 |" in md and "| meld iein T=2 | 3/3 |" in md
    assert "| runs | 12 of 12 planned finished |" in md  # both invocations' plans in these setups


def test_report_renders_baselines_alone(baseline_dir: Path):
    """A folder with only baseline runs (`--only baselines` first) still renders Table 2."""
    path = baseline_dir / "runs.jsonl"
    recs = [r for r in read_records(path) if not (r["kind"] == "run" and r.get("arch") == "iein")
            and not (r["kind"] == "plan" and r["session"] == "s1")]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    md = render_report(baseline_dir).read_text()
    assert "No finished run of the main model yet." in md and "CNN, ours (`glove-cnn`, 3 seeds)" in md
    assert "IEIN against each baseline" not in md and "vectors vs model" not in md
    # a folder of another dataset's baselines (`--dataset iemocap --only baselines`): its plan
    # gives no MELD main T, so MELD's main model (Table 5 reads it) has no runs
    from iein.reproduce.runs_view import Runs

    other = [{**r, "datasets": ["iemocap"], "main_iterations": {"iemocap": 3}} if r["kind"] == "plan" else r
             for r in recs if r["kind"] != "run"]
    assert Runs(other).main("meld") == [] and Runs(other).main("iemocap") == []


def test_report_times_and_replays_iein_and_baselines_apart(baseline_dir: Path):
    """IEIN rows and baselines run in their own invocations with their own patience: the
    header gives each part's wall time, and the patience replay is per part, at each run's
    own patience (a baseline trained with patience 6 is not labelled "now 4")."""
    path = baseline_dir / "runs.jsonl"
    recs = []
    for r in read_records(path):
        if r["kind"] == "run" and r.get("arch") == "iein":
            r = {**r, "train_config": {**r["train_config"], "patience": 4}, "session_elapsed": 100.0}
        elif r["kind"] == "run":
            r = {**r, "session": "s2", "session_elapsed": 500.0}
        recs.append(r)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    md = render_report(baseline_dir).read_text()
    assert "IEIN 0.03 h over 1 invocation; baselines 0.14 h over 1 invocation" in _row(md, "wall time")[1]
    time_md = md.split("## Where the time goes")[1]
    assert _row(time_md, "MELD | IEIN")[2] == "3" and _row(time_md, "MELD | baselines")[2] == "9"
    labels = {(c[1], c[2]) for c in (_row(l, "") for l in time_md.splitlines() if l.startswith("| MELD"))}
    assert ("IEIN", "2 (now 4)") in labels and ("baselines", "3 (now 6)") in labels
    assert not any(part == "baselines" and "now 4" in p for part, p in labels)


# --------------------------------------------------------------------------------------------
# the real pipeline


@pytest.mark.slow
def test_quick_baselines_end_to_end(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "quick"
    assert main(["reproduce", "--quick", "--dataset", "meld", "--only", "baselines", "--workers", "0",
                 "--out", str(out), "--data-root", str(shared_data)]) == 0
    err = capsys.readouterr().err
    assert re.search(r"plan: 10 runs to do \(0 done\), about \d+ min in this process", err)
    recs = read_records(out / "runs.jsonl")
    runs = [r for r in recs if r["kind"] == "run"]
    assert sorted(r["key"] for r in runs) == sorted(f"meld/meld-{a}+quick/{a}/seed{s}" for a in BASELINES
                                                   for s in (0, 1))
    two_stage = {"clstm", "clstm_crf", "dialoguernn", "dialoguegcn"}
    assert {(r["arch"], r["encoder"]) for r in runs} == {(a, "frozen" if a in two_stage else "glove-cnn")
                                                        for a in BASELINES}
    # two-stage: each seed's CNN is trained once into out/stage1 and frozen under the four models
    for seed in (0, 1):
        firsts = [r["stage1"] for r in runs if r["arch"] in two_stage and r["seed"] == seed]
        assert len(firsts) == 4 and len({f["checkpoint"] for f in firsts}) == 1
        assert sorted(f["reused"] for f in firsts) == [False, True, True, True] and firsts[0]["arch"] == "cnn"
        assert Path(firsts[0]["checkpoint"]).parent == (out / "stage1").resolve()
    assert len(list((out / "stage1").glob("*.safetensors"))) == 2
    assert all("stage1" not in r for r in runs if r["arch"] not in two_stage)
    plan = next(r for r in recs if r["kind"] == "plan")
    assert plan["only"] == "baselines" and plan["baselines"] == list(BASELINES) and plan["estimate"]["todo"] == 10
    md = (out / "report.md").read_text()
    R = load_runs(out)
    for arch in BASELINES:
        vals = [r["test"]["final"]["weighted_f1"] for r in R.baseline("meld", arch)]
        assert len(vals) == 2
    cnn = [r["test"]["final"]["weighted_f1"] for r in R.baseline("meld", "cnn")]
    # --quick trains one epoch: the cap ends every run, and the report says so
    assert _row(md, "CNN, ours (`glove-cnn`, 2 seeds, 2 stopped by cap)")[-1] == format_mean_std(cnn)
    assert "stopped by the epoch cap while dev was still improving" in md
    assert all(r["stopped_by"] == "cap" for r in R.baseline("meld", "cnn"))
    # a second invocation finds everything done (the keys and settings match)
    assert main(["reproduce", "--quick", "--dataset", "meld", "--only", "baselines", "--workers", "0",
                 "--out", str(out), "--data-root", str(shared_data), "--estimate-only"]) == 0
    assert capsys.readouterr().out.startswith("plan: nothing to do (10 done)")
    # ... and a real resume accepts the two-stage records (their encoder is the frozen stage 1)
    assert main(["reproduce", "--quick", "--dataset", "meld", "--only", "baselines", "--workers", "0",
                 "--out", str(out), "--data-root", str(shared_data)]) == 0
    assert "10 already in" in capsys.readouterr().err


def test_cap_flag_on_fixture_histories():
    assert cut_by_cap(epochs_run=30, best_epoch=28, max_epochs=30, patience=6)  # still improving at the cap
    assert not cut_by_cap(epochs_run=30, best_epoch=24, max_epochs=30, patience=6)  # the rule fires at 30 too
    assert not cut_by_cap(epochs_run=12, best_epoch=6, max_epochs=30, patience=6)  # the rule stopped it
    run = {"epochs_run": 9, "best_epoch": 9, "train_config": {"max_epochs": 9, "patience": 6}}
    assert cap_of(run) and stopped_by_cap(run)
    assert not stopped_by_cap({**run, "stopped_by": "max_epochs"})  # a recorded flag wins


def test_report_warns_about_capped_runs_only_when_present(baseline_dir: Path):
    md = render_report(baseline_dir).read_text()
    assert "stopped by cap" not in md and "stopped by the epoch cap" not in md
    path = baseline_dir / "runs.jsonl"
    lines = path.read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    for rec in recs:  # two CNN seeds ran to a cap of 9 epochs with their best at epoch 8
        if rec.get("key", "").startswith("meld/meld-cnn/cnn/seed") and not rec["key"].endswith("seed2"):
            rec.update(best_epoch=8, train_config={**rec["train_config"], "max_epochs": 9})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    md = render_report(baseline_dir).read_text()
    assert _row(md, "CNN, ours")[0].endswith("3 seeds, 2 stopped by cap)")
    assert "**Warning: 2 runs of this table were stopped by the epoch cap" in md
