"""Run any model over encoded conversations and score every step.

Kept apart from training so that ``iein evaluate``, the trainer's dev check, the benchmarks,
the Recognizer API and the server share one inference path (:func:`infer`).  It depends on
the model contract only (:class:`~iein.models.base.ConversationModel`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..data.batching import Batch, EncodedConversation, dialogue_tensors
from ..layers import scatter_utterances
from ..models.base import ConversationModel


@dataclass
class StepPredictions:
    """One conversation's output: ``probs (steps, n, L)`` and label ``ids (steps, n)``.
    ``ids`` are the model's decoding (argmax, or Viterbi for a CRF), not always ``probs``' argmax."""

    probs: np.ndarray
    ids: np.ndarray


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.inference_mode()
def infer(model: ConversationModel, items: Sequence[EncodedConversation]) -> tuple[np.ndarray, np.ndarray]:
    """The one inference path (evaluation, benchmarks, the Recognizer, the server) for a
    group of conversations: probabilities ``(B, steps, max_n, L)`` and label ids
    ``(B, steps, max_n)``, padded past each conversation's length.  The model must be in
    eval mode.  The utterance encoder runs in bounded chunks (``encode_many``), so one long
    conversation or utterance does not pad thousands of short ones.

    An oracle model (the ``gold_label`` ablation) reads the conversations' gold labels."""
    device = model_device(model)
    n_utts, speakers, labels = dialogue_tensors(items)
    flat = model.utterance_encoder.encode_many([f for item in items for f in item.features])
    batch = Batch(None, n_utts, speakers, labels, list(range(len(items)))).to(device)
    u = scatter_utterances(flat, batch.n_utts)  # the model's dropout is the identity in eval
    steps = model.context(u, batch)
    probs = model.step_probs(steps, batch).float().cpu().numpy()
    ids = model.decode(steps, batch).cpu().numpy()
    return probs, ids


def predict_steps(model: ConversationModel, data: Sequence[EncodedConversation],
                  batch_size: int = 64) -> list[StepPredictions]:
    """Every step's output for every conversation, in the order of ``data``.  Conversations
    go through :func:`infer` in groups of ``batch_size`` of similar length (little padding)."""
    was_training = model.training
    model.eval()
    out: list[StepPredictions | None] = [None] * len(data)
    order = sorted(range(len(data)), key=lambda i: len(data[i]))
    try:
        for start in range(0, len(order), batch_size):
            group = order[start: start + batch_size]
            probs, ids = infer(model, [data[i] for i in group])
            for row, conv_idx in enumerate(group):
                n = len(data[conv_idx])
                out[conv_idx] = StepPredictions(probs[row, :, :n], ids[row, :, :n])
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def evaluate_model(
    model: ConversationModel,
    data: Sequence[EncodedConversation],
    labels: Sequence[str],
    exclude: Sequence[str] = (),
    batch_size: int = 64,
    preds: list[StepPredictions] | None = None,
) -> dict:
    """Scores (see :func:`iein.evaluation.metrics.evaluate_steps`) over labelled utterances."""
    from .metrics import evaluate_steps  # scikit-learn: seconds to import, not needed to predict

    if preds is None:
        preds = predict_steps(model, data, batch_size)
    gold = np.concatenate([c.label_ids for c in data])
    ids = np.concatenate([p.ids for p in preds], axis=1)  # (steps, total_utts)
    keep = gold >= 0
    return evaluate_steps([s[keep] for s in ids], gold[keep], labels, exclude=exclude)


def selection_metric(scores: dict) -> tuple[str, float]:
    """The dev number model selection maximises, with its name: weighted F1, or the
    micro-F1 without the excluded label (DailyDialog's "no emotion") when one is set."""
    final = scores["final"]
    if "micro_f1_excl" in final:
        return "micro-F1 excl.", float(final["micro_f1_excl"])
    return "w-F1", float(final["weighted_f1"])
