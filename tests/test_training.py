"""Real-data smoke training, determinism, checkpoints and the CLI on small MELD subsets."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from iein.checkpoint import load_checkpoint, read_metadata
from iein.cli import main
from iein.data.conversation import Corpus
from iein.errors import CheckpointError, ConfigError
from iein.training.callbacks import Callback
from iein.evaluation.evaluate import predict_steps
from iein.data.batching import iter_batches
from iein.training.config import TrainConfig
from iein.training.early_stopping import replay
from iein.training.experiment import ExperimentConfig
from iein.training.trainer import class_weights, prepare, side_files, train

SMALL_MODEL = dict(emotion_dim=8, iterations=2, dropout=0.1)
SMALL_ENCODER = dict(hidden=16, dropout=0.1)


def small_exp(**train_cfg) -> ExperimentConfig:
    """A small IEIN on the GloVe-BiGRU encoder with the given TrainConfig fields."""
    return ExperimentConfig("generic", "iein", "glove-bigru", dict(SMALL_MODEL), dict(SMALL_ENCODER),
                            TrainConfig(**train_cfg))


@pytest.fixture(scope="module")
def meld_small(shared_data: Path) -> Corpus:
    from iein.data.registry import load_corpus

    full = load_corpus("meld", shared_data / "meld")
    return Corpus(full.name, full.labels, {"train": full["train"][:60], "dev": full["dev"][:15], "test": full["test"][:15]})


@pytest.fixture(scope="module")
def meld_prepared(meld_small: Corpus):
    return prepare(meld_small, log=lambda _: None)


def test_vocabulary_comes_from_train_only(meld_small, meld_prepared):
    from iein.text.tokenizer import tokenize

    train_words = {t for c in meld_small["train"] for u in c.utterances for t in tokenize(u.text)}
    assert set(meld_prepared.vocab.to_list()[2:]) == train_words


def test_batches_keep_dialogues_whole(meld_prepared):
    from iein.encoders.glove import collate_tokens

    data = meld_prepared.splits["train"]
    seen = []
    for batch in iter_batches(data, 7, collate_tokens, shuffle=True, rng=np.random.default_rng(0)):
        tokens, word_lengths = batch.inputs
        assert tokens.shape[0] == batch.n_utterances == int(word_lengths.numel())
        start = 0
        for row, i in enumerate(batch.index):
            n = len(data[i])
            assert int(batch.n_utts[row]) == n
            assert torch.equal(batch.labels[row, :n], torch.from_numpy(data[i].label_ids))
            assert torch.equal(batch.speakers[row, :n], torch.from_numpy(data[i].speaker_ids))
            assert bool((batch.speakers[row, n:] == -1).all())
            # utterances are stored back to back in dialogue order
            for j, ids in enumerate(data[i].features):
                assert int(word_lengths[start + j]) == len(ids)
                assert torch.equal(tokens[start + j, : len(ids)], torch.from_numpy(ids))
            start += n
        seen += batch.index
    assert sorted(seen) == list(range(len(data)))


def test_smoke_training_loss_falls_and_is_deterministic(meld_prepared, tmp_path):
    exp = small_exp(lr=3e-3, max_epochs=3, patience=10, seed=3, threads=1)
    r1 = train(meld_prepared, exp, out=tmp_path / "a.safetensors", log=lambda _: None)
    losses = [h["loss"] for h in r1.history]
    assert losses[-1] < losses[0]
    # the side files of a run (best-so-far, resume state) are gone once the run has ended
    assert not any(p.exists() for p in side_files(tmp_path / "a.safetensors"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]
    r2 = train(meld_prepared, exp, log=lambda _: None)
    assert [h["loss"] for h in r2.history] == losses
    assert r1.best_epoch == max(range(1, 4), key=lambda e: (r1.history[e - 1]["dev_score"], -e))
    # the report's patience replay follows the trainer's rule on the same history
    assert replay([h["dev_score"] for h in r1.history], 10) == (r1.best_epoch, r1.epochs_run)
    assert r1.test is not None and len(r1.test["steps"]) == 3

    # the checkpoint reproduces the in-memory model's predictions exactly
    loaded = load_checkpoint(tmp_path / "a.safetensors")
    assert loaded.labels == meld_prepared.labels and loaded.vocab.to_list() == meld_prepared.vocab.to_list()
    test = meld_prepared.splits["test"]
    for a, b in zip(predict_steps(r1.model, test), predict_steps(loaded.model, test)):
        assert np.array_equal(a.probs, b.probs) and np.array_equal(a.ids, b.ids)
    meta = read_metadata(tmp_path / "a.safetensors")
    assert meta["best_epoch"] == r1.best_epoch and meta["test"]["final"]["weighted_f1"] == r1.test["final"]["weighted_f1"]
    assert meta["embeddings"]["name"] == "glove-6b-50d" and len(meta["data_checksums"]["train"]) == 64


def assert_same_run(resumed, full, out: Path, full_out: Path) -> None:
    """A resumed run ended exactly as the uninterrupted one: history (but its seconds),
    selection, scores and every weight of the written checkpoint."""
    def drop_time(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert drop_time(resumed.history) == drop_time(full.history)
    assert resumed.best_epoch == full.best_epoch and resumed.dev == full.dev and resumed.test == full.test
    a, b = load_checkpoint(out).model.state_dict(), load_checkpoint(full_out).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)


def test_run_killed_inside_an_epoch_resumes_from_that_step_bit_identically(meld_prepared, tmp_path):
    """With ``resume_every_s`` the resume state is also written after steps inside an epoch: a
    run killed after step 3 of epoch 2 continues from step 4 (not from epoch 2's start) and
    ends exactly where an uninterrupted run without such states ends."""
    cfg = dict(lr=3e-3, max_epochs=2, patience=10, seed=5, threads=1, batch_size=8)
    full = train(meld_prepared, small_exp(**cfg), out=tmp_path / "full.safetensors", log=lambda _: None)
    exp = small_exp(**cfg, resume_every_s=1e-9)  # a state after every step

    class Killed(Exception):
        pass

    class KillAt(Callback):
        def on_step(self, epoch: int, step: int) -> None:
            if (epoch, step) == (2, 3):
                raise Killed

    out = tmp_path / "cut.safetensors"
    with pytest.raises(Killed):
        train(meld_prepared, exp, out=out, log=lambda _: None, callbacks=[KillAt()])
    assert side_files(out)[1].exists() and not out.exists()
    logs: list[str] = []
    resumed = train(meld_prepared, exp, out=out, resume=True, log=logs.append)
    assert any(m.startswith("resuming in epoch 2 after step 3 of 8") for m in logs)
    assert_same_run(resumed, full, out, tmp_path / "full.safetensors")
    with pytest.raises(ConfigError, match="resume_every_s"):
        TrainConfig(resume_every_s=-1.0)


def test_interrupted_run_resumes_bit_identically(meld_prepared, tmp_path):
    """A run killed after epoch 1 leaves its best-so-far checkpoint and resume state (never
    the target); ``resume=True`` continues and ends exactly where an uninterrupted run ends."""
    exp = small_exp(lr=3e-3, max_epochs=2, patience=10, seed=5, threads=1)
    full = train(meld_prepared, exp, out=tmp_path / "full.safetensors", log=lambda _: None)

    class Killed(Exception):
        pass

    def die_in_epoch_2(msg: str) -> None:
        if msg.startswith("epoch   2"):  # epoch 2 trained, its resume state not yet written
            raise Killed

    out = tmp_path / "cut.safetensors"
    with pytest.raises(Killed):
        train(meld_prepared, exp, out=out, log=die_in_epoch_2)
    best, state = side_files(out)
    assert not out.exists() and best.exists() and state.exists()
    # the best-so-far file is a normal checkpoint, written before the epoch-2 log line
    assert read_metadata(best)["best_epoch"] == full.best_epoch
    assert load_checkpoint(best).labels == meld_prepared.labels

    other = small_exp(lr=1e-3, max_epochs=2, patience=10, seed=5, threads=1)
    with pytest.raises(CheckpointError, match="different configuration"):
        train(meld_prepared, other, out=out, resume=True, log=lambda _: None)
    with pytest.raises(ConfigError, match="resume"):
        train(meld_prepared, exp, out=tmp_path / "never.safetensors", resume=True, log=lambda _: None)

    logs: list[str] = []
    resumed = train(meld_prepared, exp, out=out, resume=True, log=logs.append)
    assert any(m.startswith("resuming after epoch 1") for m in logs)
    assert_same_run(resumed, full, out, tmp_path / "full.safetensors")
    assert out.exists() and not best.exists() and not state.exists()


def test_checkpoint_corruption_is_a_one_line_error(meld_prepared, tmp_path):
    path = tmp_path / "m.safetensors"
    train(meld_prepared, small_exp(max_epochs=1, threads=1), out=path, log=lambda _: None)
    raw = path.read_bytes()
    cases = {
        "truncated": raw[: len(raw) // 2],
        "garbage": b"\x00" * 64,
        "empty": b"",
    }
    for name, blob in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(blob)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(bad)
        assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_class_weights_balanced_and_sqrt(meld_prepared):
    assert class_weights(meld_prepared.splits["train"], 7, "none") is None
    w = class_weights(meld_prepared.splits["train"], 7, "balanced")
    gold = np.concatenate([c.label_ids for c in meld_prepared.splits["train"]])
    counts = np.bincount(gold, minlength=7)
    # rarer classes weigh more; mean is 1
    assert float(w.mean()) == pytest.approx(1.0)
    assert w[int(np.argmax(counts))] == w.min()
    s = class_weights(meld_prepared.splits["train"], 7, "sqrt")
    assert float(s.max() / s.min()) == pytest.approx(float(torch.sqrt(w.max() / w.min())), rel=1e-5)


def test_cli_train_then_evaluate(shared_data, tmp_path, capsys, monkeypatch):
    # own-corpus path: write a tiny generic JSONL corpus from real MELD dialogues
    from iein.data.registry import load_corpus

    full = load_corpus("meld", shared_data / "meld")
    for split, convs in (("train", full["train"][:30]), ("dev", full["dev"][:8])):
        with open(tmp_path / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for c in convs:
                f.write(json.dumps({"id": c.id, "utterances": [
                    {"speaker": u.speaker, "text": u.text, "label": u.label} for u in c.utterances]}) + "\n")
    ckpt = tmp_path / "own.safetensors"
    rc = main(["train", "--train", str(tmp_path / "train.jsonl"), "--dev", str(tmp_path / "dev.jsonl"),
               "--epochs", "1", "--threads", "1", "--set", "utterance_hidden=8", "--set", "emotion_dim=4",
               "--out", str(ckpt)])
    assert rc == 0 and ckpt.exists() and ckpt.with_suffix(".json").exists()
    rc = main(["evaluate", "--model", str(ckpt), "--test", str(tmp_path / "dev.jsonl"),
               "--json", str(tmp_path / "eval.json")])
    assert rc == 0
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert 0 <= scores["final"]["weighted_f1"] <= 100 and len(scores["steps"]) == 3
    captured = capsys.readouterr()
    assert "weighted" in captured.out.lower() and f"scores written to {tmp_path / 'eval.json'}" in captured.err

    # without --json the scores go beside the checkpoint: <stem>.eval-<file stem>-<split>.json
    rc = main(["evaluate", "--model", str(ckpt), "--split", "dev", "--dev", str(tmp_path / "dev.jsonl")])
    assert rc == 0
    beside = tmp_path / "own.eval-dev-dev.json"
    assert json.loads(beside.read_text())["final"] == scores["final"]  # same file, same scores
    assert f"scores written to {beside}" in capsys.readouterr().err

    # a finished run is never replaced by accident; a missing dev split is refused up front
    size = ckpt.stat().st_size
    assert main(["train", "--train", str(tmp_path / "train.jsonl"), "--dev", str(tmp_path / "dev.jsonl"),
                 "--out", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and str(ckpt) in err and "--force" in err and "\n" not in err
    assert ckpt.stat().st_size == size
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--train", str(tmp_path / "train.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--dev" in err and "--dev-fraction" in err and "\n" not in err
    assert not (tmp_path / "runs").exists()  # refused before training: nothing written


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "nope.safetensors"), "--dataset", "meld"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope.safetensors" in err and "\n" not in err
    assert main(["train", "--dataset", "meld", "--set", "bogus=1", "--data-dir", str(tmp_path)]) == 2


def test_dailydialog_selects_on_micro_f1_without_no_emotion(shared_data: Path):
    from iein.data.registry import load_corpus

    full = load_corpus("dailydialog", shared_data / "dailydialog")
    small = Corpus(full.name, full.labels, {"train": full["train"][:40], "dev": full["dev"][:10], "test": full["test"][:10]})
    data = prepare(small, log=lambda _: None)
    result = train(data, small_exp(max_epochs=1, threads=1, exclude_label="no emotion"), log=lambda _: None)
    assert result.history[0]["dev_score"] == result.dev["final"]["micro_f1_excl"]
    assert result.test["final"]["excluded"] == ["no emotion"]
