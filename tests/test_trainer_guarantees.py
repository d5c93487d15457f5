"""Tests that guard what training promises (selection on dev, the loss it was asked for).

Each test fails on one specific mutation of the trainer that would otherwise leave the
suite green: the best epoch's weights not restored before test is scored, class weights
not reaching the loss, gradient clipping removed, embeddings given the main weight decay,
and the early-stopping comparison loosened.  Dev scores are scripted where the test needs a
particular history; everything else is the real trainer on real MELD dialogues.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

import iein.training.trainer as trainer_mod
from iein.data.conversation import Corpus
from iein.training.early_stopping import EarlyStopping, replay
from iein.training.experiment import resolve_experiment
from iein.training.trainer import build_for, build_optimizer, prepare, train

SMALL = {"encoder.hidden": 8, "emotion_dim": 4, "iterations": 1}


@pytest.fixture(scope="module")
def data(shared_data: Path):
    from iein.data.registry import load_corpus

    full = load_corpus("meld", shared_data / "meld")
    small = Corpus(full.name, full.labels, {"train": full["train"][:24], "dev": full["dev"][:6],
                                            "test": full["test"][:6]})
    return prepare(small, log=lambda _: None)


def _exp(**train):
    return resolve_experiment("meld", overrides=SMALL, threads=1, **train)


def _script_dev(monkeypatch, scores):
    """Replace the dev selection score by a scripted sequence; record the weights the model
    had at every dev evaluation (the real evaluation still runs)."""
    it = iter(scores)
    seen: list[dict[str, torch.Tensor]] = []
    real_eval = trainer_mod.evaluate_model

    def evaluate(model, *a, **k):
        seen.append({n: p.detach().clone() for n, p in model.state_dict().items()})
        return real_eval(model, *a, **k)

    monkeypatch.setattr(trainer_mod, "evaluate_model", evaluate)
    monkeypatch.setattr(trainer_mod, "selection_metric", lambda _dev: ("w-F1", float(next(it))))
    return seen


def test_best_epoch_weights_are_restored_before_scoring(data, monkeypatch):
    seen = _script_dev(monkeypatch, [50.0, 70.0, 60.0, 55.0])
    result = train(data, _exp(max_epochs=4, patience=10, lr=1e-2), log=lambda _: None)
    assert result.best_epoch == 2 and result.epochs_run == 4
    assert result.history[result.best_epoch - 1]["dev_score"] == max(h["dev_score"] for h in result.history)
    # evaluations: epochs 1-4, then dev and test with the selected weights
    assert len(seen) == 6
    final = seen[4]
    assert all(torch.equal(final[k], seen[1][k]) for k in final), "dev/test scored with non-selected weights"
    assert not all(torch.equal(final[k], seen[3][k]) for k in final)
    assert all(torch.equal(seen[5][k], seen[1][k]) for k in final)


def test_patience_is_counted_exactly_by_the_trainer(data, monkeypatch):
    _script_dev(monkeypatch, itertools.chain([60.0, 61.0], itertools.repeat(61.0)))
    result = train(data, _exp(max_epochs=10, patience=2), log=lambda _: None)
    # ties are not improvements: best stays 2, stop once epoch - best >= patience
    assert (result.best_epoch, result.epochs_run) == (2, 4)
    assert replay([60.0, 61.0, 61.0, 61.0, 61.0], patience=2) == (2, 4)


def test_early_stopping_rule_edges():
    rule = EarlyStopping(patience=3, min_epochs=5)
    assert rule.update(1, 10.0) and not rule.update(2, 10.0)
    assert [rule.should_stop(e) for e in (3, 4, 5)] == [False, False, True]


def test_class_weights_reach_the_loss(data):
    a = train(data, _exp(max_epochs=1, class_weighting="none"), log=lambda _: None).model
    b = train(data, _exp(max_epochs=1, class_weighting="balanced"), log=lambda _: None).model
    diff = max(float((a.state_dict()[k] - b.state_dict()[k]).abs().max()) for k in a.state_dict())
    assert diff > 1e-4


def test_gradient_clipping_is_applied(data):
    from iein.utils import set_seed

    set_seed(_exp().train.seed)  # the trainer's initial weights
    start = build_for(data, _exp()).state_dict()

    def moved(model):
        return max(float((model.state_dict()[k] - start[k]).abs().max()) for k in start)

    free = moved(train(data, _exp(max_epochs=1, clip_norm=0.0, weight_decay=0.0), log=lambda _: None).model)
    # clipped to 1e-12 the gradients are far below Adam's eps: the weights hardly move (no weight
    # decay, whose L2 gradient is added after clipping)
    clipped = moved(train(data, _exp(max_epochs=1, clip_norm=1e-12, weight_decay=0.0), log=lambda _: None).model)
    assert free > 1e-3 and clipped < 0.05 * free


def test_embeddings_get_their_own_weight_decay(data):
    exp = _exp(weight_decay=1e-3, embedding_weight_decay=0.0)
    model = build_for(data, exp)
    optim = build_optimizer(model, exp.train)
    emb = model.utterance_encoder.embedding.weight
    groups = [g for g in optim.param_groups if any(p is emb for p in g["params"])]
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0 and len(groups[0]["params"]) == 1
    others = [g for g in optim.param_groups if g is not groups[0]]
    assert others and all(g["weight_decay"] == 1e-3 for g in others)
    n_params = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in optim.param_groups) == n_params
