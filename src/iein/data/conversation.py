"""The one conversation model used everywhere: readers, training, the Python API, HTTP.

A :class:`Conversation` is an ordered list of :class:`Utterance` (speaker, text, optional
label).  A :class:`Corpus` bundles the train/dev/test splits of a dataset with its label set,
in a fixed order, so that label ids mean the same thing in every split and every checkpoint.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Utterance:
    speaker: str
    text: str
    label: str | None = None


@dataclass
class Conversation:
    id: str
    utterances: list[Utterance]

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def labels(self) -> list[str | None]:
        return [u.label for u in self.utterances]

    @property
    def is_labelled(self) -> bool:
        return all(u.label is not None for u in self.utterances)


@dataclass
class Corpus:
    """A dataset: its name, label set (order defines label ids) and splits."""

    name: str
    labels: tuple[str, ...]
    splits: dict[str, list[Conversation]] = field(default_factory=dict)
    #: split -> list of human-readable notes about repaired/dropped data (never silent).
    notes: dict[str, list[str]] = field(default_factory=dict)

    def __getitem__(self, split: str) -> list[Conversation]:
        return self.splits[split]

    def label_counts(self, split: str) -> collections.Counter[str]:
        return collections.Counter(
            u.label for c in self.splits[split] for u in c.utterances if u.label is not None
        )

    def stats(self, split: str) -> tuple[int, int]:
        """(dialogues, utterances) in ``split``."""
        convs = self.splits[split]
        return len(convs), sum(len(c) for c in convs)


def label_index(labels: Sequence[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(labels)}


def infer_labels(conversations: Iterable[Conversation]) -> tuple[str, ...]:
    """Label set of a user corpus, in order of first appearance (stable, documented)."""
    seen: dict[str, None] = {}
    for conv in conversations:
        for utt in conv.utterances:
            if utt.label is not None:
                seen.setdefault(utt.label, None)
    return tuple(seen)
