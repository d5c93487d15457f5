"""Run a model over encoded conversations and score every step.

Kept apart from training so that ``iein evaluate``, the trainer's dev check, the benchmarks,
the Recognizer API and the server share one inference path (:func:`infer_probs`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..models.iein import IEIN
from ..models.layers import scatter_utterances
from ..training.batching import IGNORE, EncodedConversation
from .metrics import evaluate_steps


#: Word slots (utterances x width) per utterance-encoder call.  Bounds memory whatever the
#: number or length of the conversations, and length-sorting within it keeps padding low.
CHUNK_TOKENS = 32_768


def encode_utterances_chunked(model: IEIN, utts: Sequence[np.ndarray]) -> torch.Tensor:
    """u_i for every utterance, ``(n, du)``: the utterance encoder run over length-sorted
    chunks of at most :data:`CHUNK_TOKENS` word slots, so one long utterance does not pad
    thousands of short ones and memory stays bounded whatever the batch."""
    lengths = np.fromiter((len(t) for t in utts), dtype=np.int64, count=len(utts))
    order = np.argsort(lengths, kind="stable")
    out = torch.empty(len(utts), model.config.utterance_dim)
    start = 0
    while start < len(order):
        end = start + 1
        # sorted ascending: the chunk's width is the length of its last utterance
        while end < len(order) and (end + 1 - start) * lengths[order[end]] <= CHUNK_TOKENS:
            end += 1
        idx = order[start:end]
        lens = lengths[idx]
        width = int(lens[-1])
        tokens = np.zeros((len(idx), width), dtype=np.int64)
        tokens[np.arange(width)[None, :] < lens[:, None]] = np.concatenate([utts[i] for i in idx])
        out[torch.from_numpy(idx)] = model.utterance_encoder(torch.from_numpy(tokens), torch.from_numpy(lens))
        start = end
    return out


@torch.inference_mode()
def infer_probs(model: IEIN, items: Sequence[EncodedConversation]) -> np.ndarray:
    """The one inference path (evaluation, benchmarks, the Recognizer, the server): the
    probabilities of every step for a group of conversations, ``(B, steps, max_n, L)``,
    padded past each conversation's length.  The model must be in eval mode.

    A ``gold_label`` model (the oracle ablation) reads the conversations' gold labels."""
    n_utts = torch.tensor([len(item) for item in items], dtype=torch.long)
    flat = encode_utterances_chunked(model, [t for item in items for t in item.token_ids])
    u = scatter_utterances(flat, n_utts)  # IEIN.encode_utterances' dropout is the identity in eval
    gold = None
    if model.config.variant == "gold_label":
        gold = torch.full((len(items), int(n_utts.max())), IGNORE, dtype=torch.long)
        for i, item in enumerate(items):
            gold[i, : len(item)] = torch.from_numpy(item.label_ids)
    steps = model.iterate(u, n_utts, gold)
    return torch.stack([torch.softmax(s, dim=-1) for s in steps], dim=1).numpy()


def predict_steps(model: IEIN, data: Sequence[EncodedConversation], batch_size: int = 64) -> list[np.ndarray]:
    """Probabilities of every step for every conversation: ``(steps, n_utts, n_labels)`` each,
    in the order of ``data``.  Conversations go through :func:`infer_probs` in groups of
    ``batch_size`` of similar length (little dialogue padding)."""
    was_training = model.training
    model.eval()
    out: list[np.ndarray | None] = [None] * len(data)
    order = sorted(range(len(data)), key=lambda i: len(data[i]))
    try:
        for start in range(0, len(order), batch_size):
            group = order[start: start + batch_size]
            probs = infer_probs(model, [data[i] for i in group])
            for row, conv_idx in enumerate(group):
                out[conv_idx] = probs[row, :, : len(data[conv_idx])]
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
