"""Batches of utterances for context-free models (length-grouped), the warm-up/decay
schedule, and a stage-1 fine-tune with both, killed and resumed, on a tiny random BERT."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from iein.data.batching import IGNORE, EncodedConversation
from iein.errors import ConfigError
from iein.training.batch_plan import POOL_BATCHES, epoch_order, item_length, lr_schedule, utterance_items
from iein.training.config import TrainConfig
from iein.training.experiment import resolve_experiment
from iein.training.trainer import prepare, side_files, train
from tests.conftest import kill_when_paused, stage1_file_in, start_paused_train, write_jsonl
from tests.test_two_stage import toy_corpus
from tests.test_transformer_encoder import make_tiny_bert


def conv(cid: str, lengths: list[int], labels: list[int]) -> EncodedConversation:
    feats = [np.arange(n, dtype=np.int64) for n in lengths]
    return EncodedConversation(cid, feats, np.asarray(labels, dtype=np.int64), np.zeros(len(lengths), dtype=np.int64))


def test_utterance_items_keep_labelled_utterances_with_their_features() -> None:
    data = [conv("a", [3, 5, 2], [0, IGNORE, 1]), conv("b", [4], [2])]
    items = utterance_items(data)
    assert [i.id for i in items] == ["a#0", "a#2", "b#0"]
    assert [int(i.label_ids[0]) for i in items] == [0, 1, 2]
    assert [item_length(i) for i in items] == [3, 2, 4]
    assert items[1].features[0] is data[0].features[2]


def test_utterance_order_is_a_length_grouped_permutation() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=1000).tolist()
    items = utterance_items([conv("a", lengths, [0] * len(lengths))])
    cfg = TrainConfig(batch_unit="utterances", batch_size=8)
    order = epoch_order(items, cfg, np.random.default_rng(1))
    assert sorted(order.tolist()) == list(range(1000))  # every utterance once
    batches = [order[s: s + 8] for s in range(0, 1000, 8)]
    spans = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    # sorted within pools of 50 batches: far less spread than random batches of 8
    random_spans = [np.ptp(np.asarray(lengths)[b]) for b in np.random.default_rng(2).permutation(1000)[:1000].reshape(-1, 8)]
    assert np.mean(spans) < 0.2 * np.mean(random_spans)
    # the batches' order is shuffled, not ascending length
    firsts = [lengths[b[0]] for b in batches]
    assert firsts != sorted(firsts)
    assert POOL_BATCHES * 8 < 1000  # more than one pool was exercised
    # a different seed gives a different order; dialogue batching stays a plain permutation
    assert not np.array_equal(order, epoch_order(items, cfg, np.random.default_rng(3)))
    np.testing.assert_array_equal(epoch_order(items, TrainConfig(), np.random.default_rng(1)),
                                  np.random.default_rng(1).permutation(1000))


def test_linear_schedule_warms_up_and_decays_to_zero() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    cfg = TrainConfig(schedule="linear", warmup=0.2, max_epochs=2)
    sched = lr_schedule(opt, cfg, steps_per_epoch=5)  # 10 steps, 2 of warm-up
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[2:] == sorted(lrs[2:], reverse=True) and lrs[-1] == pytest.approx(1 / 8)
    assert opt.param_groups[0]["lr"] == 0.0
    assert lr_schedule(opt, TrainConfig(), 5) is None  # constant: the plain optimiser


@pytest.mark.parametrize("field,value", [("batch_unit", "turns"), ("schedule", "cosine"), ("warmup", 1.0),
                                         ("warmup", -0.1)])
def test_bad_batch_settings_are_config_errors(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IEIN_CACHE_DIR", str(tmp_path / "iein-cache"))


def test_utterance_batches_are_refused_for_context_models(tmp_path: Path) -> None:
    bert = make_tiny_bert(tmp_path / "bert")
    exp = resolve_experiment("generic", arch="iein", encoder="transformer",
                             overrides={"encoder.model": str(bert), "encoder.layers": 1, "train.batch_unit": "utterances"},
                             threads=1, max_epochs=1)
    data = prepare(toy_corpus(), encoder="transformer", encoder_config=exp.encoder_config, log=lambda _: None)
    with pytest.raises(ConfigError, match="batch_unit 'utterances': model iein reads the dialogue"):
        train(data, exp, log=lambda _: None)


def stage1_args(tmp_path: Path) -> list[str]:
    bert = make_tiny_bert(tmp_path / "bert")
    files = {s: write_jsonl(tmp_path / f"{s}.jsonl", toy_corpus()[s]) for s in ("train", "dev", "test")}
    sets = {"encoder.model": bert, "encoder.mode": "finetune", "encoder.save_full_weights": "true",
            "encoder.pooling": "target", "encoder.window_past": 2, "encoder.window_future": 1,
            "encoder.speaker_names": "true", "encoder.encoder_lr": 1e-3, "train.batch_unit": "utterances",
            "train.batch_size": 8, "train.schedule": "linear", "train.warmup": 0.2, "model.dropout": 0.1}
    args = ["--train", str(files["train"]), "--dev", str(files["dev"]), "--test", str(files["test"]),
            "--arch", "cnn", "--encoder", "transformer", "--threads", "1", "--epochs", "3", "--seed", "2"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


def start_paused(args: list[str], pause_at: str, tmp_path: Path) -> subprocess.Popen:
    """``iein train ARGS`` in a fresh process that pauses at ``pause_at`` (a PauseAt callback)."""
    return start_paused_train(args, pause_at, env={"IEIN_CACHE_DIR": str(tmp_path / "iein-cache")})


@pytest.mark.slow  # a fresh interpreter (torch + transformers import)
@pytest.mark.parametrize("inside_epoch", [False, True])
def test_killed_stage1_fine_tune_resumes_bit_identically(tmp_path: Path, inside_epoch: bool, capsys) -> None:
    """Killed after step 3 of epoch 2: resumed from epoch 1's end, or (``resume_every_s``) from
    that step; either way it ends as the uninterrupted run."""
    from iein.cli import main

    args = stage1_args(tmp_path)
    cut_args = args + ["--set", "train.resume_every_s=0.000001"] if inside_epoch else args
    out, ref = tmp_path / "cut.safetensors", tmp_path / "ref.safetensors"
    # killed mid-epoch 2, after its 3rd of 6 steps (48 utterances, 8 a step): the schedule is mid-way
    proc = start_paused(cut_args + ["--out", str(out)], "2.3", tmp_path)
    assert main(["train", *args, "--out", str(ref)]) == 0  # meanwhile: the uninterrupted run
    kill_when_paused(proc)
    assert side_files(out)[1].is_file() and not out.exists()
    capsys.readouterr()
    assert main(["train", *cut_args, "--out", str(out), "--resume"]) == 0
    where = "in epoch 2 after step 3 of 6" if inside_epoch else "after epoch 1"
    assert f"resuming {where}" in capsys.readouterr().err
    got, want = load_file(str(out)), load_file(str(ref))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    summary, ref_summary = (json.loads(p.with_suffix(".json").read_text()) for p in (out, ref))
    assert [h["loss"] for h in summary["history"]] == [h["loss"] for h in ref_summary["history"]]
    assert summary["test"] == ref_summary["test"]


@pytest.mark.slow  # a fresh interpreter, two stages twice
def test_two_stage_preset_killed_in_stage1_resumes_both_stages(tmp_path: Path, capsys) -> None:
    """``--preset iemocap-minilm-ctx`` killed after stage 1's first epoch: a plain rerun is refused,
    ``--resume`` continues stage 1 and then trains stage 2, ending as the uninterrupted run."""
    from iein.cli import main

    bert = make_tiny_bert(tmp_path / "bert")
    files = {s: write_jsonl(tmp_path / f"{s}.jsonl", toy_corpus()[s]) for s in ("train", "dev", "test")}
    args = ["--train", str(files["train"]), "--dev", str(files["dev"]), "--test", str(files["test"]),
            "--preset", "iemocap-minilm-ctx", "--set", f"encoder.model={bert}", "--set", "encoder.max_tokens=64",
            "--threads", "1", "--epochs", "3", "--seed", "1"]
    out, ref = tmp_path / "cut" / "m.safetensors", tmp_path / "ref" / "m.safetensors"
    proc = start_paused(args + ["--out", str(out)], "1", tmp_path)
    assert main(["train", *args, "--out", str(ref)]) == 0
    kill_when_paused(proc)
    stage1 = stage1_file_in(out.parent)
    assert side_files(stage1)[1].is_file() and not stage1.exists() and not out.exists()
    capsys.readouterr()
    assert main(["train", *args, "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["train", *args, "--out", str(out), "--resume"]) == 0
    assert "(resumed)" in capsys.readouterr().err
    for a, b in ((stage1, stage1_file_in(ref.parent)), (out, ref)):
        got, want = load_file(str(a)), load_file(str(b))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), a
