"""The baselines' presets (Tables 1-2): their optimiser settings are the dev grid's best
cells, their epoch caps do not bind where the grid stopped on dev, and the CNN row of a seed
is the stage-1 model its two-stage baselines freeze (trained once, by that row)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from iein.data.registry import load_corpus
from iein.reproduce import runner, worker
from iein.reproduce.datasets import quick_subset
from iein.reproduce.plan import build_plan
from iein.reproduce.records import read_records
from iein.reproduce.runner import reproduce
from iein.reproduce.worker import provided_stage1, stage1_path
from iein.training.config import BASELINES, PRESETS, TrainConfig

GRID = Path(__file__).resolve().parents[1] / "docs" / "results" / "baseline_grid.json"
#: grid model name -> preset suffix (the two-stage cLSTMs are the Tables' rows)
PRESET_OF = {"cnn": "cnn", "clstm": "clstm-e2e", "clstm_crf": "clstm_crf-e2e", "clstm-2stage": "clstm",
             "clstm_crf-2stage": "clstm_crf", "dialoguernn": "dialoguernn", "dialoguegcn": "dialoguegcn"}


def _dev_best() -> dict[tuple[str, str], dict]:
    best: dict[tuple[str, str], dict] = {}
    for cell in json.loads(GRID.read_text()):
        key = (cell["dataset"], cell["model"])
        if key not in best or cell["dev_wf1"] > best[key]["dev_wf1"]:
            best[key] = cell
    return best


def test_baseline_presets_are_the_dev_best_cells_of_the_grid():
    best = _dev_best()
    assert len(best) == 14  # 7 models x 2 datasets
    for (ds, model), cell in best.items():
        train = TrainConfig.from_dict(PRESETS[f"{ds}-{PRESET_OF[model]}"].train)
        assert (train.lr, train.batch_size) == (cell["lr"], cell["batch_size"]), (ds, model)
        # the two-stage cells froze a CNN, as their presets do; the end-to-end ones did not
        assert (PRESETS[f"{ds}-{PRESET_OF[model]}"].stage1 is not None) == cell["two_stage"]


def test_two_stage_won_on_dev_so_it_is_the_tables_row():
    best = _dev_best()
    for ds in ("meld", "iemocap"):
        for arch in ("clstm", "clstm_crf"):
            assert best[(ds, f"{arch}-2stage")]["dev_wf1"] > best[(ds, arch)]["dev_wf1"]
            assert PRESETS[f"{ds}-{arch}"].stage1 == f"{ds}-cnn"


def test_caps_do_not_bind_where_the_grid_stopped_on_dev():
    """A cap at least the grid's where the grid's run stopped on patience (it then never
    binds: same settings, same epochs), and above the grid's where the grid's cap ended it."""
    for (ds, model), cell in _dev_best().items():
        train = TrainConfig.from_dict(PRESETS[f"{ds}-{PRESET_OF[model]}"].train)
        if cell["stopped_by"] == "patience":  # ... at this preset's patience and minimum
            assert cell["epochs_run"] == max(cell["best_epoch"] + train.patience, train.min_epochs), (ds, model)
            assert train.max_epochs >= cell["epochs_run"], (ds, model)
        else:
            assert cell["epochs_run"] == max(c["epochs_run"] for c in json.loads(GRID.read_text())
                                             if c["dataset"] == ds and c["model"] == model and c["stopped_by"] == "cap")
            assert train.max_epochs > cell["epochs_run"], (ds, model)


def test_the_cnn_row_is_the_stage1_file_of_its_seed(tmp_path: Path):
    plan = build_plan("all", 1, 1, seeds_baselines=2, only="baselines")
    for ds in ("meld", "iemocap"):
        for seed in (0, 1):
            runs = {s.arch: s for s in plan if s.dataset == ds and s.seed == seed}
            assert set(runs) == set(BASELINES)
            own = provided_stage1(runs["cnn"], runs["cnn"].experiment(), tmp_path)
            assert own is not None and own.parent == tmp_path
            for arch in ("clstm", "clstm_crf", "dialoguernn", "dialoguegcn"):
                exp = runs[arch].experiment()
                assert stage1_path(runs[arch], exp.stage1(), tmp_path) == own
                assert provided_stage1(runs[arch], exp, tmp_path) is None
    # stage 1 keeps its own cap when it is longer than stage 2's (IEMOCAP's CNN: 300 > 150) ...
    drnn = next(s for s in plan if s.key == "iemocap/iemocap-dialoguernn/dialoguernn/seed0").experiment()
    assert (drnn.train.max_epochs, drnn.stage1().train.max_epochs) == (150, 300)
    # ... and a stage 2 capped below its preset caps its stage 1 alike
    capped = build_plan("iemocap", 1, 1, seeds_baselines=1, only="dialoguernn", overrides=["train.max_epochs=2"])
    assert capped[0].experiment().stage1().train.max_epochs == 2
    # a quick run's stage 1 is shrunk otherwise than its CNN row: the row writes no file
    quick = next(s for s in build_plan("meld", 1, 1, quick=True, only="cnn"))
    assert provided_stage1(quick, quick.experiment(), tmp_path) is None


def test_two_stage_runs_reuse_the_file_their_cnn_row_trained(shared_data: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    """A real (not quick) plan on a few MELD dialogues: the CNN row trains into stage1/, the
    cLSTM of its seed freezes that very file without training a CNN of its own."""
    def few(name, root=None, quick=False):
        return quick_subset(load_corpus(name, root))

    monkeypatch.setattr(runner, "load_dataset", few)  # the dataset record
    monkeypatch.setattr(worker, "load_dataset", few)  # the runs
    plan = build_plan("meld", 1, 1, seeds_baselines=1, only="cnn,clstm",
                      overrides=["encoder.n_filters=4", "encoder.output_size=6", "train.max_epochs=2"])
    out = tmp_path / "rep"
    done = reproduce(out, plan=plan, workers=0, data_root=shared_data, progress=False, log=lambda _m: None)
    assert not done["failed"] and len(done["run"]) == 2
    runs = {r["arch"]: r for r in read_records(out / "runs.jsonl") if r["kind"] == "run"}
    files = list((out / "stage1").glob("*.safetensors"))
    assert len(files) == 1 and "stage1" not in runs["cnn"]
    assert runs["clstm"]["stage1"]["reused"] is True
    assert Path(runs["clstm"]["stage1"]["checkpoint"]) == files[0].resolve()
    assert runs["clstm"]["encoder"] == "frozen"
