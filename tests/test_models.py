"""The model contract, checked for every registered model on every GloVe encoder.

A new model in ``iein.models.registry.MODELS`` is covered here without writing a test:
output shapes, padding invariance (bit for bit), the loss falls when overfitting two
dialogues, and a checkpoint round trip through the Recognizer.  Model-specific behaviour
(equations, the CRF against brute force, DialogueGCN's edges...) has its own test file.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from iein.checkpoint import load_checkpoint, save_checkpoint
from iein.cli import main
from iein.data.batching import IGNORE, collate, encode_with
from iein.data.conversation import Conversation, Utterance
from iein.encoders.glove import WordFeaturizer
from iein.errors import CheckpointError, ConfigError
from iein.evaluation.evaluate import infer
from iein.models.registry import MODELS, build_model
from iein.recognizer import Recognizer
from iein.text.vocab import Vocab

LABELS = ("x", "y", "z")
VOCAB = Vocab(["<pad>", "<unk>"] + [f"w{i}" for i in range(30)])
ENCODERS = {
    "glove-bigru": {"vocab_size": len(VOCAB), "embedding_dim": 8, "hidden": 6, "dropout": 0.0},
    "glove-cnn": {"vocab_size": len(VOCAB), "embedding_dim": 8, "n_filters": 4, "output_size": 10,
                  "filter_sizes": [2, 3], "dropout": 0.0},
}
#: small sizes per model (defaults are the papers' and would make these tests slow)
SMALL = {
    "iein": {"emotion_dim": 3, "iterations": 2},
    "clstm": {"hidden": 8, "dense": 8},
    "clstm_crf": {"hidden": 8, "dense": 8},
    "dialoguernn": {"global_dim": 8, "party_dim": 8, "emotion_dim": 8, "hidden_dim": 8, "rec_dropout": 0.0,
                    "emotion_dropout": 0.0},
    "dialoguegcn": {"graph_hidden": 8, "hidden": 8, "classifier_hidden": 8, "num_bases": 2},
}


def _small(arch: str, causal: bool = False) -> dict:
    cls = MODELS[arch].config_class
    cfg = SMALL.get(arch, {})
    unknown = set(cfg) - cls.field_names()
    assert not unknown, f"{arch}: SMALL names fields its config lacks: {unknown}"
    return dict(cfg, n_labels=len(LABELS), dropout=0.0, causal=causal)


def _convs() -> list[Conversation]:
    rng = np.random.default_rng(0)

    def utt(speaker: str, label: str) -> Utterance:
        return Utterance(speaker, " ".join(f"w{int(i)}" for i in rng.integers(0, 30, rng.integers(1, 6))), label)

    return [
        Conversation("a", [utt("A", "x"), utt("B", "y"), utt("A", "z"), utt("C", "x"), utt("B", "y")]),
        Conversation("b", [utt("B", "z"), utt("A", "x")]),
    ]


def toy_model(arch: str, encoder: str, seed: int = 0, causal: bool = False):
    torch.manual_seed(seed)
    return build_model(arch, _small(arch, causal), encoder, ENCODERS[encoder], featurizer=WordFeaturizer(VOCAB))


def toy_batch(model, convs=None):
    convs = convs or _convs()
    feat = model.utterance_encoder.featurizer
    items = [encode_with(c, feat.featurize(c), {k: i for i, k in enumerate(LABELS)}) for c in convs]
    return items, collate(items, model.utterance_encoder.collate)


#: every model on every encoder, offline and causal (``causal=true``, the live form)
CASES = [(a, e, c) for a in MODELS for e in ENCODERS for c in (False, True)]


@pytest.mark.parametrize("arch,encoder,causal", CASES)
def test_output_shapes_and_step_count(arch, encoder, causal):
    model = toy_model(arch, encoder, causal=causal).eval()
    _, batch = toy_batch(model)
    out = model(batch)
    assert len(out.steps) == model.n_steps >= 1
    for s in out.steps:
        assert s.shape == (2, 5, len(LABELS))
    assert out.loss is not None and torch.isfinite(out.loss)
    probs = model.step_probs(out.steps, batch)
    ids = model.decode(out.steps, batch)
    assert probs.shape == (2, model.n_steps, 5, len(LABELS)) and ids.shape == (2, model.n_steps, 5)
    assert torch.allclose(probs[0].sum(-1), torch.ones(model.n_steps, 5), atol=1e-5)


@pytest.mark.parametrize("arch,encoder,causal", CASES)
def test_padding_never_reaches_real_outputs(arch, encoder, causal):
    model = toy_model(arch, encoder, causal=causal).eval()
    _, batch = toy_batch(model)
    with torch.no_grad():
        u = model.utterance_vectors(batch)
        garbage = u.clone()
        garbage[1, 2:] = torch.randn_like(garbage[1, 2:]) * 100  # dialogue b has 2 utterances
        a, b = model.context(u, batch), model.context(garbage, batch)
        for sa, sb in zip(a, b):
            assert torch.equal(sa[0], sb[0]) and torch.equal(sa[1, :2], sb[1, :2])
        assert torch.equal(model.decode(a, batch)[1, :, :2], model.decode(b, batch)[1, :, :2])


@pytest.mark.parametrize("arch,encoder,causal", CASES)
def test_loss_falls_when_overfitting_two_dialogues(arch, encoder, causal):
    torch.set_num_threads(1)
    model = toy_model(arch, encoder, causal=causal).train()
    _, batch = toy_batch(model)
    optim = torch.optim.Adam(model.param_groups(0.0), lr=1e-2)
    losses = []
    for _ in range(40):
        out = model(batch)
        optim.zero_grad()
        out.loss.backward()
        optim.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses[::8]


@pytest.mark.parametrize("arch,encoder,causal", CASES)
def test_checkpoint_round_trip_through_the_recognizer(arch, encoder, causal, tmp_path):
    model = toy_model(arch, encoder, seed=3, causal=causal).eval()
    items, _ = toy_batch(model)
    path = save_checkpoint(tmp_path / "m.safetensors", model, LABELS, dataset="unit")
    rec = Recognizer.load(path)
    assert rec.model.model_type == arch and rec.model.utterance_encoder.encoder_type == encoder
    assert rec.model.causal == (causal or arch == "cnn")
    probs, ids = infer(model, items)
    for row, conv in enumerate(_convs()):
        got = rec.predict([{"speaker": u.speaker, "text": u.text} for u in conv.utterances])
        assert [g["label"] for g in got] == [LABELS[i] for i in ids[row, -1, : len(conv)]]
        np.testing.assert_allclose([[g["probs"][k] for k in LABELS] for g in got],
                                   probs[row, -1, : len(conv)], rtol=1e-5, atol=1e-6)
    loaded = load_checkpoint(path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k])


def test_unknown_model_encoder_and_bad_pairs_are_one_line_errors(capsys, tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'nope' \\(choices: iein"):
        build_model("nope", {}, "glove-bigru", {})
    with pytest.raises(ConfigError, match="unknown encoder 'nope' \\(choices: glove-bigru"):
        build_model("iein", {}, "nope", {})
    for argv in (["train", "--dataset", "meld", "--arch", "nope"], ["train", "--dataset", "meld", "--encoder", "bad"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: unknown") and "choices:" in err and len(err.splitlines()) == 1


def test_checkpoint_of_unknown_model_type_is_refused(tmp_path):
    import json

    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    model = toy_model("iein", "glove-bigru")
    path = save_checkpoint(tmp_path / "m.safetensors", model, LABELS)
    with safe_open(str(path), framework="pt") as f:
        md = f.metadata()
    meta = json.loads(md["iein"])
    meta["model_type"] = "transformer-xl"
    state = load_file(str(path))
    # re-sign the metadata so that only the unknown type is wrong
    import hashlib

    raw = json.dumps(meta)
    sums = json.loads(md["iein_sha256"])
    sums["meta"] = hashlib.sha256(raw.encode()).hexdigest()
    save_file(state, str(path), metadata={"iein": raw, "iein_sha256": json.dumps(sums)})
    with pytest.raises(CheckpointError, match="unknown model 'transformer-xl' \\(choices: iein"):
        load_checkpoint(path)


def test_speakers_are_party_indices_within_each_dialogue():
    model = toy_model("iein", "glove-bigru")
    _, batch = toy_batch(model)
    assert batch.speakers.tolist() == [[0, 1, 0, 2, 1], [0, 1, -1, -1, -1]]
    assert (batch.labels[1, 2:] == IGNORE).all()
