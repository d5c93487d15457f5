"""A user's own corpus with a made-up label set: train, evaluate, predict, and the errors."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from iein.cli import main

LABELS = ("glee", "gloom", "fume")
CUES = {"glee": ["yay", "wonderful", "great"], "gloom": ["sigh", "alas", "sorry"], "fume": ["grr", "stupid", "damn"]}
FILLER = ["the", "meeting", "is", "at", "noon", "we", "went", "home", "and", "then", "it", "rained"]


def write_corpus(path: Path, n: int, seed: int) -> None:
    """Conversations whose labels follow cue words (learnable), in the generic JSONL layout."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for d in range(n):
            utts = []
            for i in range(rng.randint(3, 7)):
                label = rng.choice(LABELS)
                words = rng.sample(FILLER, 4) + [rng.choice(CUES[label])]
                rng.shuffle(words)
                utts.append({"speaker": "AB"[i % 2], "text": " ".join(words), "label": label})
            f.write(json.dumps({"id": f"c{d}", "utterances": utts}) + "\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("own")
    write_corpus(root / "train.jsonl", 80, 0)
    write_corpus(root / "dev.jsonl", 15, 1)
    write_corpus(root / "test.jsonl", 15, 2)
    return root


@pytest.fixture(scope="module")
def model(corpus: Path) -> Path:
    out = corpus / "own.safetensors"
    rc = main(["train", "--train", str(corpus / "train.jsonl"), "--dev", str(corpus / "dev.jsonl"),
               "--test", str(corpus / "test.jsonl"), "--labels", ",".join(LABELS), "--epochs", "8",
               "--threads", "1", "--set", "utterance_hidden=8", "--set", "emotion_dim=4", "--set", "lr=0.01",
               "--set", "batch_size=8", "--out", str(out)])
    assert rc == 0
    return out


def test_own_corpus_trains_with_its_label_set(model: Path, corpus: Path):
    result = json.loads(model.with_suffix(".json").read_text())
    assert list(result["test"]["final"]["per_class_f1"]) == list(LABELS)
    assert result["test"]["final"]["weighted_f1"] > 80  # cue words make it learnable; chance is ~33


def test_evaluate_and_predict_on_own_corpus(model: Path, corpus: Path, tmp_path: Path, capsys):
    assert main(["evaluate", "--model", str(model), "--test", str(corpus / "test.jsonl"),
                 "--json", str(tmp_path / "e.json")]) == 0
    scores = json.loads((tmp_path / "e.json").read_text())
    trained = json.loads(model.with_suffix(".json").read_text())
    assert scores["final"]["weighted_f1"] == pytest.approx(trained["test"]["final"]["weighted_f1"])
    capsys.readouterr()
    assert main(["predict", "--model", str(model), str(corpus / "test.jsonl"), "--out", str(tmp_path / "p.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 15 and all(u["label"] in LABELS for r in rows for u in r["utterances"])


def test_unknown_training_label_is_a_clear_error(corpus: Path, tmp_path: Path, capsys):
    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps({"id": "x", "utterances": [{"speaker": "A", "text": "hi", "label": "rage"}]}) + "\n")
    assert main(["train", "--train", str(bad), "--dev", str(corpus / "dev.jsonl"), "--labels", ",".join(LABELS)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "rage" in err and str(bad) in err and "\n" not in err


def test_label_set_not_matching_the_checkpoint(model: Path, tmp_path: Path, capsys):
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "x", "utterances": [{"speaker": "A", "text": "hi", "label": "joy"}]}) + "\n")
    assert main(["evaluate", "--model", str(model), "--test", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "joy" in err and "\n" not in err


def test_default_output_name_dev_fraction_and_no_overwrite(corpus: Path, tmp_path: Path, monkeypatch, capsys):
    """Without --out: runs/<train file stem>[-<arch>]-seed<N>.safetensors in the working
    folder; --dev-fraction holds out train dialogues for selection; a finished run is never
    replaced without --force."""
    monkeypatch.chdir(tmp_path)
    args = ["train", "--train", str(corpus / "train.jsonl"), "--labels", ",".join(LABELS), "--epochs", "1",
            "--threads", "1", "--set", "utterance_hidden=8", "--set", "emotion_dim=4"]
    assert main([*args, "--dev-fraction", "0.2", "--dev", str(corpus / "dev.jsonl")]) == 2
    assert "not both" in capsys.readouterr().err
    assert main([*args, "--dev-fraction", "0.2"]) == 0
    out = tmp_path / "runs" / "train-seed0.safetensors"
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["train-seed0.json", "train-seed0.safetensors"]
    from iein.checkpoint import read_metadata

    sums = read_metadata(out)["data_checksums"]
    assert set(sums) >= {"train", "dev"} and sums["train"] != sums["dev"]  # dev carved out of train
    capsys.readouterr()
    before = out.read_bytes()
    assert main([*args, "--dev-fraction", "0.2"]) == 2
    err = capsys.readouterr().err
    assert str(Path("runs") / "train-seed0.safetensors") in err and "--force" in err and err.count("\n") == 1
    assert out.read_bytes() == before
    # another model gets another default name (refused here only because it exists too)
    (out.parent / "train-cnn-seed0.safetensors").write_bytes(b"")
    assert main([*args[:-4], "--dev-fraction", "0.2", "--arch", "cnn"]) == 2
    assert "train-cnn-seed0.safetensors exists" in capsys.readouterr().err
