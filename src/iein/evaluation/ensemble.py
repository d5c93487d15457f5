"""Ensembles: several trained models label the same conversations, their class
probabilities averaged (the peers' usual ensemble, e.g. SPCL's and CoMPM's reported runs).

Each member reads the conversation through its own featurizer and encoder, so members may
differ in encoder, context model or seed; they must agree on the label set (the same labels
in the same order: the averaged columns must mean the same classes) and on the dataset
they were trained for.  Step ``s`` of the ensemble averages the members' step ``s`` when all
members have the same number of steps (IEIN's P^0 ... P^T stay visible); otherwise only the
final step is averaged and reported.  The ensemble's labels are the argmax of the averaged
probabilities (a CRF member contributes its marginal-free softmax, not its Viterbi path).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

import numpy as np

from ..data.batching import EncodedConversation, encode_with
from ..data.conversation import Conversation
from ..encoders.base import Featurizer
from ..errors import CheckpointError
from ..models.base import ConversationModel
from .evaluate import StepPredictions, evaluate_model, predict_steps


def check_members(labels: Sequence[Sequence[str]], meta: Sequence[dict[str, Any]], sources: Sequence[str]) -> None:
    """One clear line when the members cannot be averaged (before any text is read)."""
    if len(sources) < 2:
        return
    for lab, src in zip(labels[1:], sources[1:]):
        if tuple(lab) != tuple(labels[0]):
            raise CheckpointError(f"ensemble members disagree on labels: {sources[0]} has {', '.join(labels[0])}; "
                                  f"{src} has {', '.join(lab)}")
    datasets = [m.get("dataset") for m in meta]
    for ds, src in zip(datasets[1:], sources[1:]):
        if ds != datasets[0]:
            raise CheckpointError(f"ensemble members were trained for different datasets: {sources[0]} on "
                                  f"{datasets[0]!r}, {src} on {ds!r}")
    excluded = [(m.get("train_config") or {}).get("exclude_label") for m in meta]
    if len(set(excluded)) > 1:
        raise CheckpointError(f"ensemble members select on different metrics (exclude_label {excluded})")


def feature_key(meta: dict[str, Any]) -> str:
    """What decides a member's features, from its checkpoint record: members with equal keys
    turn a conversation into the same features (the same frozen encoder and input settings,
    or the same vocabulary), so an ensemble computes them once for all of them.  Paths and
    cache folders are left out: a stage-1 encoder is named by its checksum."""
    config = {k: v for k, v in (meta.get("encoder_config") or {}).items() if k not in ("checkpoint", "cache_dir")}
    identity = [meta.get("encoder_type"), config, meta.get("featurizer"), meta.get("vocab")]
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def ensemble_steps(step_counts: Sequence[int]) -> int:
    """Steps the ensemble reports: the members' common count, else 1 (the final step)."""
    return step_counts[0] if len(set(step_counts)) == 1 else 1


def average(member_probs: Sequence[np.ndarray]) -> np.ndarray:
    """Members' ``(steps_m, n, L)`` probabilities -> the ensemble's ``(steps, n, L)``."""
    steps = ensemble_steps([p.shape[0] for p in member_probs])
    return np.mean([p[-steps:] for p in member_probs], axis=0)


def average_predictions(members: Sequence[Sequence[StepPredictions]]) -> list[StepPredictions]:
    """Per conversation, the averaged probabilities and their argmax labels."""
    out = []
    for preds in zip(*members):
        probs = average([p.probs for p in preds])
        out.append(StepPredictions(probs, probs.argmax(-1)))
    return out


def member_predictions(model: ConversationModel, featurizer: Featurizer, convs: Sequence[Conversation],
                       labels: Sequence[str]) -> tuple[list[EncodedConversation], list[StepPredictions]]:
    """One member's encoded ``convs`` (they carry the gold labels) and its predictions: each
    member featurizes them itself (its cache answers for vectors computed before)."""
    index = {name: i for i, name in enumerate(labels)}
    data = [encode_with(c, f, index) for c, f in zip(convs, featurizer.featurize_many(convs))]
    return data, predict_steps(model, data)


def score_members(members: Sequence[tuple[ConversationModel, Featurizer]], convs: Sequence[Conversation],
                  labels: Sequence[str], exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The scores of one model, or of the average of several, on labelled ``convs``."""
    outputs = [member_predictions(model, featurizer, convs, labels) for model, featurizer in members]
    preds = outputs[0][1] if len(members) == 1 else average_predictions([p for _, p in outputs])
    # any member's encoded data supplies the gold labels only: the members share the label set
    return evaluate_model(members[0][0], outputs[0][0], labels, exclude=exclude, preds=preds)
