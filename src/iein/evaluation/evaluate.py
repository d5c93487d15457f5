"""Run a model over encoded conversations and score every step.

Kept apart from training so that ``iein evaluate``, the trainer's dev check, the benchmark
and later the Recognizer API share one inference path.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..models.iein import IEIN
from ..training.batching import EncodedConversation, iter_batches
from .metrics import evaluate_steps


@torch.inference_mode()
def predict_steps(model: IEIN, data: Sequence[EncodedConversation], batch_size: int = 64) -> list[np.ndarray]:
    """Probabilities of every step for every conversation: ``(steps, n_utts, n_labels)`` each,
    in the order of ``data``."""
    was_training = model.training
    model.eval()
    out: list[np.ndarray | None] = [None] * len(data)
    try:
        for batch in iter_batches(data, batch_size):
            gold = batch.labels if model.config.variant == "gold_label" else None
            steps = model(batch.tokens, batch.word_lengths, batch.n_utts, gold=gold)
            probs = torch.stack([torch.softmax(s, dim=-1) for s in steps], dim=1).numpy()  # (B, S, N, L)
            for row, conv_idx in enumerate(batch.index):
                out[conv_idx] = probs[row, :, : int(batch.n_utts[row])]
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def evaluate_model(
    model: IEIN,
    data: Sequence[EncodedConversation],
    labels: Sequence[str],
    exclude: Sequence[str] = (),
    batch_size: int = 64,
    probs: list[np.ndarray] | None = None,
) -> dict:
    """Scores (see :func:`iein.evaluation.metrics.evaluate_steps`) over labelled utterances."""
    if probs is None:
        probs = predict_steps(model, data, batch_size)
    gold = np.concatenate([c.label_ids for c in data])
    preds = np.concatenate([p.argmax(-1) for p in probs], axis=1)  # (steps, total_utts)
    keep = gold >= 0
    return evaluate_steps([s[keep] for s in preds], gold[keep], labels, exclude=exclude)
