"""Featurized conversations -> dialogue batches, for every model and every encoder.

The data layer knows nothing about models or encoders: an utterance's *features* are
whatever its encoder's featurizer made of it (token ids for the GloVe encoders, a cached
vector for a frozen transformer, ...), and the encoder passes its own ``collate`` to turn
a list of them into model input.  What every model needs besides is fixed here:

* ``n_utts``    utterances per dialogue (dialogues are right-padded to the longest);
* ``speakers``  each utterance's party index *within its dialogue*, numbered in order of
  first appearance (0 = whoever speaks first), ``-1`` at padding.  DialogueRNN's party
  states and DialogueGCN's relation types are built from it; speaker *names* are not model
  inputs, so a model generalises to conversations between people it never saw;
* ``labels``    gold label ids, :data:`IGNORE` at padding and unlabelled utterances.

A batch holds whole dialogues; their utterances are stored back to back (dialogue-major),
so the utterance encoder runs once over all of them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .conversation import Conversation

#: Label id of padded and unlabelled utterances (PyTorch's cross-entropy ``ignore_index``).
IGNORE = -100
#: Words kept per utterance by word-level encoders; longer utterances are truncated (a
#: 100,000-character utterance must not blow up memory).  MELD's longest has ~70 tokens.
MAX_WORDS = 128

Collate = Callable[[Sequence[Any]], Any]


@dataclass
class EncodedConversation:
    """One conversation as model input: per-utterance features, labels and speakers."""

    id: str
    features: list[Any]  # one encoder-specific item per utterance
    label_ids: np.ndarray  # int64, IGNORE where unlabelled
    speaker_ids: np.ndarray  # int64, party index within the dialogue

    def __len__(self) -> int:
        return len(self.features)


def speaker_ids(conv: Conversation) -> np.ndarray:
    """Party index of each utterance, in order of first appearance within the dialogue."""
    seen: dict[str, int] = {}
    return np.asarray([seen.setdefault(u.speaker, len(seen)) for u in conv.utterances], dtype=np.int64)


def label_ids(conv: Conversation, label_index: Mapping[str, int] | None) -> np.ndarray:
    labels = np.full(len(conv), IGNORE, dtype=np.int64)
    if label_index is not None:
        for i, utt in enumerate(conv.utterances):
            if utt.label is not None:
                labels[i] = label_index[utt.label]
    return labels


def encode_with(
    conv: Conversation, features: list[Any], label_index: Mapping[str, int] | None
) -> EncodedConversation:
    """Bundle an encoder's features of ``conv`` with its labels and speakers."""
    return EncodedConversation(conv.id, features, label_ids(conv, label_index), speaker_ids(conv))


@dataclass
class Batch:
    inputs: Any  # the encoder's collated utterances, dialogue-major
    n_utts: Tensor  # (B,) utterances per dialogue
    speakers: Tensor  # (B, max_n) int64 party index, -1 at padding
    labels: Tensor  # (B, max_n) int64, IGNORE at padding / unlabelled
    index: list[int]  # positions of the dialogues in the encoded list

    @property
    def n_utterances(self) -> int:
        return int(self.n_utts.sum())

    @property
    def mask(self) -> Tensor:
        """``(B, max_n)`` True at real utterances."""
        return torch.arange(self.labels.size(1), device=self.n_utts.device)[None, :] < self.n_utts[:, None]

    def to(self, device: torch.device | str) -> "Batch":
        """The batch on ``device`` (inputs may be a tensor, a tuple/dict of tensors, or None)."""
        return replace(self, inputs=to_device(self.inputs, device), n_utts=self.n_utts.to(device),
                       speakers=self.speakers.to(device), labels=self.labels.to(device))


def to_device(obj: Any, device: torch.device | str) -> Any:
    """``obj`` on ``device``: a tensor, or a dict/tuple/list of them (encoders' collated input)."""
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def dialogue_tensors(items: Sequence[EncodedConversation]) -> tuple[Tensor, Tensor, Tensor]:
    """``n_utts (B,)``, ``speakers (B, N)`` and ``labels (B, N)`` of a group of dialogues."""
    n_utts = torch.tensor([len(item) for item in items], dtype=torch.long)
    width = int(n_utts.max())
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    speakers = torch.full((len(items), width), -1, dtype=torch.long)
    for i, item in enumerate(items):
        labels[i, : len(item)] = torch.from_numpy(item.label_ids)
        speakers[i, : len(item)] = torch.from_numpy(item.speaker_ids)
    return n_utts, speakers, labels


def collate(items: Sequence[EncodedConversation], collate_utterances: Collate,
            index: Sequence[int] | None = None) -> Batch:
    n_utts, speakers, labels = dialogue_tensors(items)
    inputs = collate_utterances([f for item in items for f in item.features])
    return Batch(inputs, n_utts, speakers, labels, list(index) if index is not None else list(range(len(items))))


def iter_batches(
    data: Sequence[EncodedConversation],
    batch_size: int,
    collate_utterances: Collate,
    shuffle: bool = False,
    rng: np.random.Generator | None = None,
    order: Sequence[int] | None = None,
) -> Iterator[Batch]:
    """Batches of ``batch_size`` dialogues (the paper's mini-batch is 32 dialogues).

    Without shuffling, dialogues are grouped by length so that little padding is computed
    (order of results is restored by ``Batch.index``).  ``order`` gives the dialogue order
    explicitly (a distributed sampler's shard).
    """
    if order is None:
        if shuffle:
            order = (rng or np.random.default_rng()).permutation(len(data))
        else:
            order = np.argsort([len(c) for c in data], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = [int(i) for i in order[start : start + batch_size]]
        yield collate([data[i] for i in idx], collate_utterances, idx)
