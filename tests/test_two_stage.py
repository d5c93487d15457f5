"""The transformer encoder end to end through the trainer, the checkpoint, the Recognizer and
the CLI, on a tiny random BERT built in the test (no downloads): the three ways to use it
(frozen + cache, LoRA, fine-tune) and the two-stage recipe (fine-tune as an utterance
classifier, export, train a context model on the exported encoder's cached features)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from iein.cli import main
from iein.data.conversation import Conversation, Corpus, Utterance
from iein.recognizer import Recognizer
from iein.training.experiment import resolve_experiment
from iein.training.trainer import prepare, train
from tests.conftest import write_jsonl
from tests.test_transformer_encoder import VOCAB, make_tiny_bert

WORDS = [w for w in VOCAB if w.isalpha()]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IEIN_CACHE_DIR", str(tmp_path / "iein-cache"))


def toy_corpus() -> Corpus:
    g = torch.Generator().manual_seed(0)

    def conv(i: int) -> Conversation:
        utts = []
        for j in range(4):
            label = ["happy", "sad"][(i + j) % 2]
            cue = "great" if label == "happy" else "bad"  # learnable from the text
            words = [WORDS[int(k)] for k in torch.randint(len(WORDS), (3,), generator=g)]
            utts.append(Utterance(["joey", "rachel"][j % 2], " ".join(words + [cue]), label))
        return Conversation(f"c{i}", utts)

    return Corpus("toy", ("happy", "sad"), {"train": [conv(i) for i in range(12)], "dev": [conv(i) for i in range(12, 16)],
                                            "test": [conv(i) for i in range(16, 20)]})


@pytest.mark.parametrize("mode,arch", [("frozen", "iein"), ("lora", "clstm"), ("finetune", "cnn")])
def test_every_mode_trains_and_round_trips(tmp_path, mode, arch):
    bert = make_tiny_bert(tmp_path / "bert")
    corpus = toy_corpus()
    # the toy BERT has one layer: the generic preset's IEIN would mix four
    enc = {"model": str(bert), "mode": mode, "save_full_weights": mode == "finetune", "encoder_lr": 1e-3, "layers": 1}
    exp = resolve_experiment("generic", arch=arch, encoder="transformer",
                             overrides={**{f"encoder.{k}": v for k, v in enc.items()}, "train.batch_size": 2, "model.dropout": 0.0},
                             threads=1, max_epochs=4)
    data = prepare(corpus, encoder="transformer", encoder_config=exp.encoder_config, log=lambda _: None)
    out = tmp_path / "m.safetensors"
    result = train(data, exp, out=out, log=lambda _: None)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    rec = Recognizer.load(out)
    conv = corpus["test"][0]
    got = rec.predict([(u.speaker, u.text) for u in conv.utterances])
    assert len(got) == len(conv) and all(g["label"] in ("happy", "sad") for g in got)
    size = out.stat().st_size
    if mode == "frozen":  # no transformer weight in the file
        assert not any(k.startswith("utterance_encoder.transformer") for k in rec.model.state_dict()
                       if k in __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(out)))
    assert size > 0


@pytest.mark.slow
def test_two_stage_recipe_through_the_cli(tmp_path, capsys):
    bert = make_tiny_bert(tmp_path / "bert")
    corpus = toy_corpus()
    files = {s: write_jsonl(tmp_path / f"{s}.jsonl", corpus[s]) for s in ("train", "dev", "test")}
    common = ["--train", str(files["train"]), "--dev", str(files["dev"]), "--test", str(files["test"]),
              "--encoder", "transformer", "--threads", "1", "--epochs", "2", "--set", f"encoder.model={bert}"]
    stage1 = tmp_path / "stage1.safetensors"
    assert main(["train", *common, "--arch", "cnn", "--set", "encoder.mode=finetune",
                 "--set", "encoder.save_full_weights=true", "--set", "encoder.encoder_lr=0.001",
                 "--out", str(stage1)]) == 0
    exported = tmp_path / "exported"
    assert main(["export-encoder", "--model", str(stage1), str(exported)]) == 0
    assert (exported / "config.json").is_file()
    # the exported weights are the fine-tuned ones, not the base model's
    from safetensors.torch import load_file

    base, tuned = load_file(str(bert / "model.safetensors")), load_file(str(exported / "model.safetensors"))
    common_keys = [k for k in base if k in tuned and base[k].is_floating_point()]
    assert common_keys and any(not torch.equal(base[k], tuned[k]) for k in common_keys)
    stage2 = tmp_path / "stage2.safetensors"
    # one layer: the generic preset's IEIN would mix four of the toy BERT's two hidden states
    assert main(["train", *common[:-1], f"encoder.model={exported}", "--arch", "iein", "--set", "encoder.layers=1",
                 "--out", str(stage2)]) == 0
    assert Recognizer.load(stage2).model.utterance_encoder.config.mode == "frozen"
    # exporting a frozen encoder is a one-line error; an existing folder is refused
    assert main(["export-encoder", "--model", str(stage2), str(tmp_path / "x")]) == 2
    assert main(["export-encoder", "--model", str(stage1), str(exported)]) == 2
    err = capsys.readouterr().err
    assert "nothing to export" in err and "exists" in err


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["meld", "iemocap"])
def test_context_window_presets_run_end_to_end(tmp_path, dataset):
    """The ``<dataset>-minilm-ctx-stage1`` preset (windowed input, target pooling, batches of
    utterances, warm-up + decay), then IEIN on its frozen vectors, on a tiny BERT."""
    bert = make_tiny_bert(tmp_path / "bert")
    corpus = toy_corpus()
    files = {s: write_jsonl(tmp_path / f"{s}.jsonl", corpus[s]) for s in ("train", "dev", "test")}
    common = ["--train", str(files["train"]), "--dev", str(files["dev"]), "--test", str(files["test"]),
              "--threads", "1", "--epochs", "2"]
    stage1 = tmp_path / "stage1.safetensors"
    assert main(["train", *common, "--preset", f"{dataset}-minilm-ctx-stage1", "--set", f"encoder.model={bert}",
                 "--set", "encoder.max_tokens=64", "--out", str(stage1)]) == 0
    enc = Recognizer.load(stage1).model.utterance_encoder
    assert (enc.config.pooling, enc.config.speaker_names, enc.config.window_past) == ("target", True,
                                                                                     {"meld": 3, "iemocap": 4}[dataset])
    stage2 = tmp_path / "stage2.safetensors"
    assert main(["train", *common, "--preset", dataset, "--encoder-from", str(stage1), "--out", str(stage2)]) == 0
    rec = Recognizer.load(stage2)
    got = rec.predict([(u.speaker, u.text) for u in corpus["test"][0].utterances])
    assert len(got) == 4 and rec.model.model_type == "iein"
