"""Which training examples make up each optimiser step, and the learning-rate schedule.

Two batch units (``TrainConfig.batch_unit``):

* ``dialogues`` (every context model): a seeded permutation of the dialogues, cut into
  batches of ``batch_size``; the paper's mini-batch is 32 dialogues.
* ``utterances`` (models that read no context: an utterance classifier, stage 1 of
  two-stage training): every labelled utterance is its own one-utterance item, so a step
  holds ``batch_size`` inputs whatever the dialogues' lengths.  Items are *length-grouped*:
  the permutation is cut into pools of 50 batches, each pool is sorted by input length and
  cut into batches, and the full batches are shuffled (the short last one stays last).  A
  transformer input with a context window is up to 128 tokens while most are far shorter, so
  a random batch pays for the longest; a pool of 50 keeps the batches' composition random.

Either way the result is one flat order whose consecutive ``batch_size`` slices are the
batches, which is what :func:`iein.training.distributed.rank_batches` splits across processes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..data.batching import IGNORE, EncodedConversation
from .config import TrainConfig

#: Batches per length-sorted pool (see the module docstring).
POOL_BATCHES = 50


def utterance_items(data: Sequence[EncodedConversation]) -> list[EncodedConversation]:
    """Each labelled utterance of ``data`` as a one-utterance conversation (its features
    already hold whatever context its encoder put into them)."""
    items = []
    for conv in data:
        for i, feat in enumerate(conv.features):
            if conv.label_ids[i] != IGNORE:
                items.append(EncodedConversation(f"{conv.id}#{i}", [feat], conv.label_ids[i: i + 1],
                                                 np.zeros(1, dtype=np.int64)))
    return items


def item_length(item: EncodedConversation) -> int:
    """Input length of a one-utterance item (tokens, or 1 for a vector)."""
    feat = item.features[0]
    return int(np.shape(feat)[-1]) if np.ndim(feat) else 1


def epoch_order(data: Sequence[EncodedConversation], cfg: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """The order of ``data`` for one epoch (see the module docstring)."""
    perm = rng.permutation(len(data))
    if cfg.batch_unit == "dialogues":
        return perm
    bs = cfg.batch_size
    lengths = np.fromiter((item_length(data[i]) for i in perm), dtype=np.int64, count=len(perm))
    pool = POOL_BATCHES * bs
    grouped = np.concatenate([perm[s: s + pool][np.argsort(lengths[s: s + pool], kind="stable")]
                              for s in range(0, len(perm), pool)]) if len(perm) else perm
    n_full = len(grouped) // bs
    full = grouped[: n_full * bs].reshape(n_full, bs)[rng.permutation(n_full)]
    return np.concatenate([full.reshape(-1), grouped[n_full * bs:]])


def n_steps(n_items: int, batch_size: int) -> int:
    return (n_items + batch_size - 1) // batch_size


def lr_schedule(optim: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR | None:
    """``linear``: warm-up over the first ``warmup`` of all steps, then linear decay to 0 at
    the end of ``max_epochs`` (None for ``constant`` without warm-up: the plain optimiser)."""
    if cfg.schedule == "constant" and cfg.warmup == 0:
        return None
    total = max(1, cfg.max_epochs * steps_per_epoch)
    warm = int(round(cfg.warmup * total))
    decay = cfg.schedule == "linear"

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if not decay:
            return 1.0
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optim, factor)
