"""Two-stage training with ``--encoder-from``: a stage-1 model's utterance encoder, frozen under
any context model (the baselines' protocol, and the small shipped transformer models)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from iein.checkpoint import load_checkpoint
from iein.cli import main
from tests.conftest import stage1_file_in
from iein.data.conversation import Conversation, Utterance
from iein.recognizer import Recognizer
from tests.conftest import write_jsonl

WORDS = ["good", "great", "bad", "awful", "the", "a", "is", "was", "day", "film"]


def toy_conversations(n: int, seed: int) -> list[Conversation]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        utts = []
        for j in range(4):
            label = ["joy", "sadness"][int(rng.integers(2))]
            cue = "great" if label == "joy" else "awful"
            words = [WORDS[int(k)] for k in rng.integers(4, len(WORDS), 3)]
            utts.append(Utterance(["ann", "bob"][j % 2], " ".join(words + [cue]), label))
        out.append(Conversation(f"c{seed}-{i}", utts))
    return out


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IEIN_CACHE_DIR", str(tmp_path / "iein-cache"))


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    glove = tmp_path / "glove.txt"
    glove.write_text("".join(f"{w} {' '.join(f'{x:.3f}' for x in rng.normal(size=8))}\n" for w in WORDS))
    out = {s: write_jsonl(tmp_path / f"{s}.jsonl", toy_conversations(n, k))
           for k, (s, n) in enumerate((("train", 12), ("dev", 4), ("test", 4)))}
    out["glove"] = glove
    return out


def _common(files: dict[str, Path]) -> list[str]:
    return ["--train", str(files["train"]), "--dev", str(files["dev"]), "--test", str(files["test"]),
            "--embeddings", str(files["glove"]), "--threads", "1", "--epochs", "2"]


CNN_SMALL = ["--set", "encoder.n_filters=4", "--set", "encoder.output_size=6", "--set", "encoder.filter_sizes=[2,3]"]


def test_stage2_keeps_the_stage1_encoder_bit_for_bit(tmp_path, files, capsys):
    stage1 = tmp_path / "stage1.safetensors"
    assert main(["train", *_common(files), "--arch", "cnn", "--encoder", "glove-cnn", *CNN_SMALL,
                 "--out", str(stage1)]) == 0
    stage2 = tmp_path / "stage2.safetensors"
    assert main(["train", *_common(files), "--arch", "dialoguernn", "--encoder-from", str(stage1),
                 "--set", "model.global_dim=6", "--set", "model.party_dim=6", "--set", "model.emotion_dim=6",
                 "--set", "model.hidden_dim=6", "--out", str(stage2)]) == 0
    err = capsys.readouterr().err
    assert "frozen glove-cnn encoder from" in err and "0 distinct cached" in err
    # a second stage 2 on the same stage 1 reads every vector from the feature cache
    assert main(["train", *_common(files), "--arch", "clstm", "--encoder-from", str(stage1),
                 "--out", str(tmp_path / "other.safetensors")]) == 0
    assert re.search(r"stage-1 vectors: 48 utterances, \d+ distinct cached, 0 computed", capsys.readouterr().err)
    first, second = load_checkpoint(stage1), load_checkpoint(stage2)
    enc2 = second.model.utterance_encoder
    # the stage-2 record names the stage-1 word vectors (reports say which vectors were used)
    assert second.meta["embeddings"]["name"] == first.meta["embeddings"]["name"]
    assert second.meta["embeddings"]["stage1_sha256"] == enc2.config.checkpoint_sha256
    assert enc2.encoder_type == "frozen" and enc2.output_dim == 6
    # the frozen weights are the stage-1 encoder's, unchanged by stage-2 training
    s1 = first.model.utterance_encoder.state_dict()
    s2 = enc2.inner.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not any(p.requires_grad for p in enc2.parameters())
    # text -> vectors at prediction time: exactly the stage-1 encoder's output (eval mode)
    conv = toy_conversations(1, 9)[0]
    got = np.stack(enc2.featurizer.featurize(conv))
    stage1_enc = first.model.utterance_encoder.eval()
    with torch.no_grad():
        want = stage1_enc.encode_many(first.featurizer.featurize(conv)).numpy()
    np.testing.assert_array_equal(got, want)
    # dropout of the context model does not reach the frozen encoder: train() keeps it in eval
    second.model.train()
    assert not enc2.inner.training
    labels = [p["label"] for p in Recognizer.load(stage2).predict([(u.speaker, u.text) for u in conv.utterances])]
    assert len(labels) == 4 and set(labels) <= {"joy", "sadness"}


def test_encoder_from_bad_input_is_one_line(tmp_path, files, capsys):
    assert main(["train", *_common(files), "--encoder-from", str(tmp_path / "nope.safetensors")]) == 2
    assert main(["train", *_common(files), "--encoder-from", str(files["glove"]), "--encoder", "glove-cnn"]) == 2
    assert main(["train", *_common(files), "--encoder-from", str(files["glove"])]) == 2  # not a checkpoint
    err = capsys.readouterr().err.strip().splitlines()
    assert "file not found" in err[0] and "do not also give --encoder glove-cnn" in err[1]
    assert "glove.txt" in err[-1] and "Traceback" not in "\n".join(err)


@pytest.mark.slow
def test_lora_stage1_ships_small(tmp_path, files):
    """A LoRA transformer frozen under IEIN: the stage-2 file holds the adapters, not the base."""
    from tests.test_transformer_encoder import make_tiny_bert

    bert = make_tiny_bert(tmp_path / "bert")
    common = [a for a in _common(files) if a not in ("--embeddings", str(files["glove"]))]
    stage1 = tmp_path / "stage1.safetensors"
    assert main(["train", *common, "--arch", "cnn", "--encoder", "transformer", "--set", f"encoder.model={bert}",
                 "--set", "encoder.mode=lora", "--set", "encoder.encoder_lr=0.001", "--out", str(stage1)]) == 0
    stage2 = tmp_path / "stage2.safetensors"
    assert main(["train", *common, "--arch", "iein", "--encoder-from", str(stage1), "--out", str(stage2)]) == 0
    keys = load_file(str(stage2)).keys()
    inner = [k for k in keys if k.startswith("utterance_encoder.inner.")]
    assert inner and all("lora_" in k for k in inner), inner[:5]
    conv = toy_conversations(1, 9)[0]
    rec = Recognizer.load(stage2)
    one = rec.predict([(u.speaker, u.text) for u in conv.utterances])
    assert [p["label"] for p in one] == [p["label"] for p in rec.predict([(u.speaker, u.text) for u in conv.utterances])]


def test_two_stage_preset_trains_stage1_first_and_reuses_it(tmp_path, files, capsys):
    """`--preset meld-dialoguernn` is two-stage: the CNN first (in --out's folder), then frozen."""
    args = ["train", *_common(files), "--preset", "meld-dialoguernn", "--epochs", "1", *CNN_SMALL,
            "--set", "model.global_dim=6", "--set", "model.party_dim=6", "--set", "model.emotion_dim=6",
            "--set", "model.hidden_dim=6", "--out", str(tmp_path / "m.safetensors")]
    assert main(args) == 0
    first = stage1_file_in(tmp_path)
    assert "-meld-cnn-seed0-" in first.name  # named by its experiment: shared by runs that need it
    err = capsys.readouterr().err
    assert f"stage 1 trains meld-cnn (cnn on glove-cnn) into {first}" in err
    assert load_checkpoint(first).model.model_type == "cnn"
    stage2 = load_checkpoint(tmp_path / "m.safetensors").model
    assert stage2.model_type == "dialoguernn" and stage2.utterance_encoder.encoder_type == "frozen"
    assert stage2.utterance_encoder.config.output_size == 6  # the --set encoder.* reached stage 1
    # a rerun (the stage-2 target removed) reuses the stage-1 file instead of retraining it
    before = first.stat().st_mtime_ns
    (tmp_path / "m.safetensors").unlink()
    assert main(args) == 0
    assert f"reusing stage 1 {first}" in capsys.readouterr().err and first.stat().st_mtime_ns == before
    # an explicit encoder turns the automatic stage 1 off
    assert main(["train", *_common(files), "--preset", "meld-dialoguernn", "--epochs", "1", "--encoder",
                 "glove-bigru", "--set", "model.global_dim=6", "--out", str(tmp_path / "e2e.safetensors")]) == 0
    assert "stage 1" not in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["clstm", "clstm_crf"])
def test_two_stage_clstm_presets_freeze_the_cnn_of_stage1(arch, tmp_path, files, capsys):
    """bc-LSTM's recipe, the Tables' row: `meld-clstm` trains meld-cnn first, then the LSTM on
    its frozen vectors; the end-to-end `meld-clstm-e2e` trains the CNN through the LSTM."""
    out = tmp_path / "m.safetensors"
    assert main(["train", *_common(files), "--preset", f"meld-{arch}", "--epochs", "1", *CNN_SMALL,
                 "--out", str(out)]) == 0
    first = stage1_file_in(tmp_path)
    assert f"stage 1 trains meld-cnn (cnn on glove-cnn) into {first}" in capsys.readouterr().err
    model = load_checkpoint(out).model
    assert model.model_type == arch and model.utterance_encoder.encoder_type == "frozen"
    e2e = tmp_path / "e2e" / "m.safetensors"
    assert main(["train", *_common(files), "--preset", f"meld-{arch}-e2e", "--epochs", "1", *CNN_SMALL,
                 "--out", str(e2e)]) == 0
    assert load_checkpoint(e2e).model.utterance_encoder.encoder_type == "glove-cnn"


@pytest.mark.slow
def test_minilm_preset_is_two_stage_lora(tmp_path, files, capsys):
    """`--preset meld-minilm`: LoRA stage 1 on the preset's transformer, then IEIN on it frozen
    (a tiny random BERT stands in for MiniLM through --set encoder.model)."""
    from tests.test_transformer_encoder import make_tiny_bert

    bert = make_tiny_bert(tmp_path / "bert")
    common = [a for a in _common(files) if a not in ("--embeddings", str(files["glove"]))]
    out = tmp_path / "m.safetensors"
    assert main(["train", *common, "--preset", "meld-minilm", "--set", f"encoder.model={bert}", "--out", str(out)]) == 0
    assert "stage 1 trains meld-minilm-stage1 (cnn on transformer)" in capsys.readouterr().err
    first = load_checkpoint(stage1_file_in(tmp_path)).model.utterance_encoder
    assert first.config.mode == "lora" and first.config.model == str(bert)
    enc = load_checkpoint(out).model.utterance_encoder
    assert enc.encoder_type == "frozen" and enc.config.inner_config["mode"] == "lora"


def test_stage1_of_other_data_is_refused_before_training(tmp_path, files, capsys):
    stage1 = tmp_path / "stage1.safetensors"
    assert main(["train", *_common(files), "--arch", "cnn", "--encoder", "glove-cnn", *CNN_SMALL, "--epochs", "1",
                 "--out", str(stage1)]) == 0
    other = write_jsonl(tmp_path / "other-train.jsonl", toy_conversations(12, 7))
    args = _common(files)
    args[1] = str(other)
    capsys.readouterr()
    assert main(["train", *args, "--arch", "clstm", "--encoder-from", str(stage1),
                 "--out", str(tmp_path / "s2.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "another 'custom' training split" in err[-1] and str(stage1) in err[-1]
    assert not any(line.startswith("epoch") for line in err)
