"""Ensembles of checkpoints: averaged probabilities in the Recognizer, ``iein evaluate`` and
``iein predict``, and the checks that refuse members that cannot be averaged."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from iein.checkpoint import load_checkpoint
from iein.cli import main
from iein.data.batching import encode_with
from iein.data.conversation import Corpus
from iein.errors import CheckpointError
from iein.evaluation.ensemble import average, average_predictions, ensemble_steps, feature_key
from iein.evaluation.evaluate import StepPredictions, evaluate_model, predict_steps
from iein.recognizer import Recognizer
from iein.training.config import TrainConfig
from iein.training.experiment import ExperimentConfig
from iein.training.trainer import prepare, train
from tests.conftest import write_jsonl


@pytest.fixture(scope="module")
def meld(shared_data: Path) -> Corpus:
    from iein.data.registry import load_corpus

    corpus = load_corpus("meld", shared_data / "meld")
    return Corpus(corpus.name, corpus.labels, {"train": corpus["train"][:30], "dev": corpus["dev"][:8],
                                               "test": corpus["test"][:6]})


def tiny(corpus: Corpus, out: Path, arch: str = "iein", seed: int = 0, iterations: int = 2) -> Path:
    model = dict(emotion_dim=4, iterations=iterations) if arch == "iein" else {}
    exp = ExperimentConfig("generic", arch, "glove-bigru", model=model, encoder_config=dict(hidden=8),
                           train=TrainConfig(max_epochs=1, threads=1, seed=seed))
    train(prepare(corpus, log=lambda _: None), exp, out=out, log=lambda _: None, evaluate_test=False)
    return out


@pytest.fixture(scope="module")
def members(meld: Corpus, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("ensemble")
    return [tiny(meld, folder / "a.safetensors", seed=0), tiny(meld, folder / "b.safetensors", seed=1),
            tiny(meld, folder / "c.safetensors", arch="cnn", seed=2)]


def test_average_keeps_common_steps_else_the_final_one() -> None:
    a, b = np.full((3, 2, 4), 0.25), np.eye(4)[[0, 1]][None].repeat(3, 0)
    np.testing.assert_allclose(average([a, b]), (a + b) / 2)
    c = np.eye(4)[[2, 2]][None]  # one step only
    got = average([a, b, c])
    assert got.shape == (1, 2, 4) and ensemble_steps([3, 3, 1]) == 1
    np.testing.assert_allclose(got[0], (a[-1] + b[-1] + c[-1]) / 3)
    preds = average_predictions([[StepPredictions(a, a.argmax(-1))], [StepPredictions(b, b.argmax(-1))]])
    np.testing.assert_array_equal(preds[0].ids, ((a + b) / 2).argmax(-1))


def test_recognizer_ensemble_averages_its_members(members: list[Path], meld: Corpus) -> None:
    conv = meld["test"][0]
    pairs = [(u.speaker, u.text) for u in conv.utterances]
    single = [Recognizer.load(p) for p in members[:2]]
    ens = Recognizer.load([str(p) for p in members[:2]])
    assert ens.steps == 3 and ens.members == tuple(str(p) for p in members[:2])
    assert ens.card["ensemble"] == list(ens.members)
    got = ens.predict(pairs)
    probs = [np.array([[u["probs"][k] for k in ens.labels] for u in r.predict(pairs)]) for r in single]
    want = (probs[0] + probs[1]) / 2
    np.testing.assert_allclose([[u["probs"][k] for k in ens.labels] for u in got], want, atol=1e-6)
    assert [u["label"] for u in got] == [ens.labels[i] for i in want.argmax(-1)]
    # with a one-step member, only the final step is reported
    mixed = Recognizer.load([str(p) for p in members])
    assert mixed.steps == 1 and all(len(u["steps"]) == 1 for u in mixed.predict(pairs))
    # streaming many conversations gives the same as one at a time (up to float batching)
    many = list(ens.predict_many([[(u.speaker, u.text) for u in c.utterances] for c in meld["test"][:3]]))
    assert [u["label"] for u in many[0]] == [u["label"] for u in got]
    np.testing.assert_allclose([list(u["probs"].values()) for u in many[0]], [list(u["probs"].values()) for u in got],
                               atol=1e-6)


def test_members_sharing_a_featurizer_compute_its_features_once(members: list[Path], meld: Corpus,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ens = Recognizer.load([str(p) for p in members[:2]])  # two seeds: one vocabulary, one featurizer
    pairs = [(u.speaker, u.text) for u in meld["test"][0].utterances]
    want = ens.predict(pairs)
    featurizer_class = type(load_checkpoint(members[0]).featurizer)
    calls = []
    real = featurizer_class.featurize_batch

    def counted(self, convs):
        calls.append(len(convs))
        return real(self, convs)

    monkeypatch.setattr(featurizer_class, "featurize_batch", counted)
    assert ens.predict(pairs) == want and calls == [1]


def test_feature_key_names_what_decides_the_features() -> None:
    frozen = {"encoder_type": "frozen", "featurizer": {"inner": {"layers": 4}},
              "encoder_config": {"checkpoint": "runs/a.safetensors", "checkpoint_sha256": "ab", "cache_dir": "/x"}}
    moved = {**frozen, "encoder_config": {**frozen["encoder_config"], "checkpoint": "/elsewhere/a.safetensors",
                                          "cache_dir": ""}}
    other = {**frozen, "encoder_config": {**frozen["encoder_config"], "checkpoint_sha256": "cd"}}
    assert feature_key(frozen) == feature_key(moved)  # the same stage-1 file in another place
    assert feature_key(frozen) != feature_key(other)
    assert feature_key(frozen) != feature_key({**frozen, "featurizer": {"inner": {"layers": 1}}})


def test_evaluate_scores_the_ensemble(members: list[Path], meld: Corpus, tmp_path: Path) -> None:
    test_file = write_jsonl(tmp_path / "test.jsonl", meld["test"])
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--model", str(members[0]), "--model", str(members[1]), "--test", str(test_file),
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["ensemble"] == [str(p) for p in members[:2]]
    # the same numbers as averaging the members' own predictions by hand
    loaded = [load_checkpoint(p) for p in members[:2]]
    index = {n: i for i, n in enumerate(loaded[0].labels)}
    preds, data = [], None
    for m in loaded:
        data = [encode_with(c, f, index) for c, f in zip(meld["test"], m.featurizer.featurize_many(meld["test"]))]
        preds.append(predict_steps(m.model, data))
    want = evaluate_model(loaded[0].model, data, loaded[0].labels, preds=average_predictions(preds))
    assert result["final"]["weighted_f1"] == pytest.approx(want["final"]["weighted_f1"])


def test_predict_with_an_ensemble(members: list[Path], meld: Corpus, tmp_path: Path, capsys) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", meld["test"][:2])
    assert main(["predict", "--model", str(members[0]), "--model", str(members[1]), str(inp)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    want = Recognizer.load([str(p) for p in members[:2]]).predict([(u.speaker, u.text) for u in meld["test"][0].utterances])
    assert [u["label"] for u in lines[0]["utterances"]] == [u["label"] for u in want]
    # Ray labels with one model only: one clear line
    assert main(["predict", "--backend", "ray", "--model", str(members[0]), "--model", str(members[1]), str(inp),
                 "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "ensembles" in capsys.readouterr().err


def test_members_that_disagree_are_refused(members: list[Path], meld: Corpus, tmp_path: Path, capsys) -> None:
    relabelled = Corpus(meld.name, tuple(reversed(meld.labels)), meld.splits)
    other = tiny(relabelled, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="disagree on labels"):
        Recognizer.load([str(members[0]), str(other)])
    assert main(["evaluate", "--model", str(members[0]), "--model", str(other), "--dataset", "meld",
                 "--data-dir", str(Path(__file__).parents[2] / "shared" / "data" / "meld")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "disagree on labels" in err[-1]
    renamed = Corpus("friends", meld.labels, meld.splits)
    other = tiny(renamed, tmp_path / "friends.safetensors")
    with pytest.raises(CheckpointError, match="different datasets"):
        Recognizer.load([str(members[0]), str(other)])
