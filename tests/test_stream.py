"""Causal models and live sessions (:mod:`iein.stream`): a causal model's label of utterance t
never changes when later utterances arrive, and a session that adds utterances one at a time
says what the same model says given the whole conversation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from iein.checkpoint import load_checkpoint, save_checkpoint
from iein.data.conversation import Conversation, Utterance
from iein.errors import DataError, IeinError
from iein.evaluation.evaluate import infer
from iein.recognizer import Recognizer
from tests.test_models import ENCODERS, LABELS, toy_batch, toy_model
from tests.test_transformer_encoder import make_tiny_bert

ARCHS = ("iein", "clstm", "clstm_crf", "dialoguernn", "dialoguegcn", "cnn")
#: the tolerance between a session and the whole-conversation run: the same ops on 1 row
#: instead of B rows (BLAS may sum in another order), float32
ATOL = 1e-5


def _conversation(n: int, seed: int) -> Conversation:
    rng = np.random.default_rng(seed)
    speakers = ["Ann", "Bob", "Cy"]
    return Conversation(f"c{seed}", [
        Utterance(speakers[int(rng.integers(0, 3))], " ".join(f"w{int(i)}" for i in rng.integers(0, 30, 4)))
        for _ in range(n)])


def _outputs(model, conv: Conversation) -> tuple[np.ndarray, np.ndarray]:
    items, _ = toy_batch(model, [conv])
    probs, ids = infer(model, items)
    return probs[0], ids[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_a_causal_model_does_not_change_its_past_labels(arch):
    torch.set_num_threads(1)
    model = toy_model(arch, "glove-bigru", seed=1, causal=True).eval()
    conv = _conversation(12, seed=2)
    full_p, full_ids = _outputs(model, conv)
    for t in (1, 5, 11):
        p, ids = _outputs(model, Conversation(conv.id, conv.utterances[:t]))
        np.testing.assert_allclose(p, full_p[:, :t], atol=ATOL)
        assert (ids == full_ids[:, :t]).all()


@pytest.mark.parametrize("arch", ("iein", "clstm", "clstm_crf", "dialoguernn", "dialoguegcn"))
def test_the_offline_models_do_read_later_utterances(arch):
    """The property above is not vacuous: the same models without ``causal`` change the
    probabilities of earlier utterances when later ones arrive."""
    model = toy_model(arch, "glove-bigru", seed=1).eval()
    conv = _conversation(12, seed=2)
    full_p, _ = _outputs(model, conv)
    p, _ = _outputs(model, Conversation(conv.id, conv.utterances[:5]))
    assert np.abs(p[-1] - full_p[-1, :5]).max() > 1e-4


def toy_recognizer(arch: str, encoder: str, tmp_path, causal: bool = True, name: str = "m") -> Recognizer:
    model = toy_model(arch, encoder, seed=3, causal=causal).eval()
    return Recognizer.load(save_checkpoint(tmp_path / f"{name}.safetensors", model, LABELS, dataset="unit"))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_a_session_says_what_the_model_says_of_the_whole_conversation(arch, encoder, tmp_path):
    rec = toy_recognizer(arch, encoder, tmp_path)
    assert rec.streams
    conv = _conversation(9, seed=4)
    whole = rec.predict([(u.speaker, u.text) for u in conv.utterances])
    session = rec.stream()
    for i, (u, want) in enumerate(zip(conv.utterances, whole)):
        got = session.add(u.speaker, u.text)
        assert got["index"] == i and got["label"] == want["label"] and got["steps"] == want["steps"]
        np.testing.assert_allclose([got["probs"][k] for k in LABELS], [want["probs"][k] for k in LABELS],
                                   atol=ATOL)
    assert len(session) == 9


def test_a_transformer_with_a_past_window_streams_and_one_with_a_future_window_is_refused(tmp_path, monkeypatch):
    from iein.encoders.transformer import TransformerEncoder, TransformerEncoderConfig
    from iein.models.registry import build_model

    monkeypatch.setenv("IEIN_CACHE_DIR", str(tmp_path / "iein-cache"))
    bert = make_tiny_bert(tmp_path / "bert")
    conv = _conversation(6, seed=5)
    recs = {}
    for future in (0, 1):
        cfg = TransformerEncoderConfig(model=str(bert), cache_dir=str(tmp_path / "f"), mode="finetune",
                                       save_full_weights=True, pooling="target", speaker_names=True, window_past=2,
                                       window_future=future)
        feat, derived = TransformerEncoder.build_featurizer(cfg, [conv], log=lambda _: None)
        torch.manual_seed(0)
        model = build_model("iein", {"n_labels": 3, "emotion_dim": 3, "causal": True}, "transformer",
                            cfg.replace(**derived), featurizer=feat).eval()
        recs[future] = Recognizer.load(save_checkpoint(tmp_path / f"m{future}.safetensors", model, LABELS,
                                                       dataset="unit"))
    with pytest.raises(IeinError, match="reads 1 following utterance"):
        recs[1].stream()
    whole = recs[0].predict([(u.speaker, u.text) for u in conv.utterances])
    session = recs[0].stream()
    for u, want in zip(conv.utterances, whole):
        got = session.add(u.speaker, u.text)
        assert got["label"] == want["label"]
        np.testing.assert_allclose([got["probs"][k] for k in LABELS], [want["probs"][k] for k in LABELS],
                                   atol=ATOL)


def test_what_cannot_stream_is_refused_in_one_line(tmp_path):
    offline = toy_recognizer("iein", "glove-bigru", tmp_path, causal=False, name="offline")
    assert not offline.streams
    with pytest.raises(IeinError, match="not causal") as err:
        offline.stream()
    assert "\n" not in str(err.value)
    live = toy_recognizer("iein", "glove-bigru", tmp_path, name="live")
    ensemble = Recognizer([load_checkpoint(live.path), load_checkpoint(live.path)], ["a", "b"])
    assert not ensemble.streams
    with pytest.raises(IeinError, match="ensemble of 2"):
        ensemble.stream()


def test_a_bad_utterance_or_a_full_session_leaves_the_session_as_it_was(tmp_path):
    rec = toy_recognizer("iein", "glove-bigru", tmp_path)
    session = rec.stream(max_utterances=2)
    first = session.add("Ann", "w1 w2")
    with pytest.raises(DataError, match="utterance 1 field 'speaker'"):
        session.add("  ", "w3")
    with pytest.raises(DataError, match="field 'text'"):
        session.add("Bob", 7)
    second = session.add("Bob", "w3")
    assert second["index"] == 1 and len(session) == 2
    want = rec.predict([("Ann", "w1 w2"), ("Bob", "w3")])
    assert [first["label"], second["label"]] == [w["label"] for w in want]
    with pytest.raises(DataError, match="session is full"):
        session.add("Ann", "w4")


def test_predict_live_answers_line_by_line_and_skips_bad_lines(tmp_path, monkeypatch, capsys):
    import io
    import json

    from iein.cli import main

    rec = toy_recognizer("iein", "glove-bigru", tmp_path)
    lines = "Ann: w1 w2\nBob\tw3 w4\n{\"speaker\": \"Ann\", \"text\": \"w5\"}\nno separator\n\nCy: w6\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert main(["predict", "--live", "--model", str(rec.path)]) == 1  # one bad line
    out = capsys.readouterr()
    got = [json.loads(line) for line in out.out.splitlines()]
    assert [(g["conversation"], g["index"], g["speaker"]) for g in got] == [(0, 0, "Ann"), (0, 1, "Bob"),
                                                                           (0, 2, "Ann"), (1, 0, "Cy")]
    want = rec.predict([("Ann", "w1 w2"), ("Bob", "w3 w4"), ("Ann", "w5")])
    assert [g["label"] for g in got[:3]] == [w["label"] for w in want]
    assert out.err.strip() == "error: line 4: expected 'speaker: text', 'speaker<TAB>text' or a JSON object"


def test_predict_live_refuses_what_cannot_stream_before_reading_input(tmp_path, capsys):
    from iein.cli import main

    offline = toy_recognizer("iein", "glove-bigru", tmp_path, causal=False)
    assert main(["predict", "--live", "--model", str(offline.path)]) != 0
    assert "not causal" in capsys.readouterr().err
    assert main(["predict", "--live", "--trace", "--model", str(offline.path)]) != 0
    assert "does not take --trace" in capsys.readouterr().err
