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
