"""Conversations -> integer tensors, and dialogue batches.

Tokenisation and vocabulary lookup happen once per corpus (:func:`encode_conversations`),
not once per epoch.  A batch holds whole dialogues; their utterances are stored back to
back so the utterance encoder runs on one ``(n_utterances, max_words)`` tensor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..data.conversation import Conversation
from ..models.iein import IGNORE
from ..text.tokenizer import tokenize
from ..text.vocab import UNK, Vocab

#: Words kept per utterance; longer utterances are truncated (a 100,000-character
#: utterance must not blow up memory).  MELD's longest utterance has ~70 tokens.
MAX_WORDS = 128


@dataclass
class EncodedConversation:
    id: str
    token_ids: list[np.ndarray]  # one int64 array per utterance, length >= 1
    label_ids: np.ndarray  # int64, IGNORE where unlabelled

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclass
class Batch:
    tokens: Tensor  # (n_utterances, max_words) int64, 0 = padding
    word_lengths: Tensor  # (n_utterances,)
    n_utts: Tensor  # (B,) utterances per dialogue
    labels: Tensor  # (B, max_n) int64, IGNORE at padding / unlabelled
    index: list[int]  # positions of the dialogues in the encoded list

    @property
    def n_utterances(self) -> int:
        return int(self.n_utts.sum())


def encode_text(text: str, vocab: Vocab, max_words: int = MAX_WORDS) -> np.ndarray:
    ids = vocab.encode(tokenize(text)[:max_words])
    if not ids:  # an empty utterance still occupies its slot in the dialogue
        ids = [vocab.encode([UNK])[0]]
    return np.asarray(ids, dtype=np.int64)


def encode_conversation(
    conv: Conversation, vocab: Vocab, label_index: Mapping[str, int] | None, max_words: int = MAX_WORDS
) -> EncodedConversation:
    labels = np.full(len(conv), IGNORE, dtype=np.int64)
    if label_index is not None:
        for i, utt in enumerate(conv.utterances):
            if utt.label is not None:
                labels[i] = label_index[utt.label]
    return EncodedConversation(conv.id, [encode_text(u.text, vocab, max_words) for u in conv.utterances], labels)


def encode_conversations(
    convs: Iterable[Conversation], vocab: Vocab, labels: Sequence[str] | None, max_words: int = MAX_WORDS
) -> list[EncodedConversation]:
    index = {name: i for i, name in enumerate(labels)} if labels is not None else None
    return [encode_conversation(c, vocab, index, max_words) for c in convs]


def collate(items: Sequence[EncodedConversation], index: list[int] | None = None) -> Batch:
    utts = [t for item in items for t in item.token_ids]
    word_lengths = torch.tensor([len(t) for t in utts], dtype=torch.long)
    tokens = torch.zeros(len(utts), int(word_lengths.max()), dtype=torch.long)
    for i, t in enumerate(utts):
        tokens[i, : len(t)] = torch.from_numpy(t)
    n_utts = torch.tensor([len(item) for item in items], dtype=torch.long)
    labels = torch.full((len(items), int(n_utts.max())), IGNORE, dtype=torch.long)
    for i, item in enumerate(items):
        labels[i, : len(item)] = torch.from_numpy(item.label_ids)
    return Batch(tokens, word_lengths, n_utts, labels, list(index) if index is not None else list(range(len(items))))


def iter_batches(
    data: Sequence[EncodedConversation],
    batch_size: int,
    shuffle: bool = False,
    rng: np.random.Generator | None = None,
) -> Iterator[Batch]:
    """Batches of ``batch_size`` dialogues (the paper's mini-batch is 32 dialogues).

    Without shuffling, dialogues are grouped by length so that little padding is computed
    (order of results is restored by ``Batch.index``).
    """
    if shuffle:
        order = (rng or np.random.default_rng()).permutation(len(data))
    else:
        order = np.argsort([len(c) for c in data], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = [int(i) for i in order[start : start + batch_size]]
        yield collate([data[i] for i in idx], idx)
