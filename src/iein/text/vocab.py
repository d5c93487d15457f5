"""Word vocabulary: token <-> id, with reserved padding and unknown-word ids.

The vocabulary is built from the TRAINING split only.  Words that occur only in dev or test
must map to ``<unk>`` exactly as unseen words will at prediction time; building the
vocabulary from all splits would leak held-out words into the model (their embedding rows
would exist, and be fine-tuned if embeddings are trainable) and inflate dev/test scores.
A caller that wants more words with *pretrained* vectors (which carry no information from
the held-out labels) can add them through ``extra``.

A vocabulary is stored inside checkpoints as a plain list of strings (:meth:`Vocab.to_list`
/ :meth:`Vocab.from_list`), never as a pickle, so loading a checkpoint cannot run code.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

from iein.errors import DataError

__all__ = ["PAD", "UNK", "PAD_ID", "UNK_ID", "Vocab"]

PAD = "<pad>"
UNK = "<unk>"
PAD_ID = 0
UNK_ID = 1


class Vocab:
    """An ordered word list; a word's id is its position.  Id 0 is ``<pad>``, 1 is ``<unk>``."""

    __slots__ = ("_words", "_index")

    def __init__(self, words: Sequence[str]) -> None:
        """Wrap ``words`` (which must start with ``<pad>``, ``<unk>`` and hold no duplicates)."""
        words = list(words)
        if words[:2] != [PAD, UNK]:
            raise DataError(f"vocabulary must start with {PAD!r}, {UNK!r}; got {words[:2]!r}")
        index: dict[str, int] = {}
        for i, word in enumerate(words):
            if not isinstance(word, str):
                raise DataError(f"vocabulary entry {i} is {type(word).__name__}, not a string")
            if word in index:
                raise DataError(f"vocabulary entry {i} {word!r} duplicates entry {index[word]}")
            index[word] = i
        self._words = words
        self._index = index

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Sequence[str]],
        min_freq: int = 1,
        max_size: int | None = None,
        extra: Iterable[str] | None = None,
    ) -> Vocab:
        """Count tokens of the training utterances and keep the frequent ones.

        Order is deterministic (frequency descending, then alphabetical) so that the same
        training data always gives the same ids, whatever the iteration order of sets or
        hash seeds.  ``max_size`` caps the number of counted words (excluding ``<pad>``,
        ``<unk>`` and ``extra``).  ``extra`` words (e.g. words that have a pretrained vector)
        are appended after the counted words, sorted, skipping any already present.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must be >= 0, got {max_size}")
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        counts.pop(PAD, None)
        counts.pop(UNK, None)
        ranked = sorted(
            (w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            ranked = ranked[:max_size]
        words = [PAD, UNK, *ranked]
        if extra is not None:
            seen = set(words)
            words.extend(sorted(w for w in set(extra) if w not in seen))
        return cls(words)

    @classmethod
    def from_list(cls, words: Sequence[str]) -> Vocab:
        """Rebuild a vocabulary saved with :meth:`to_list` (e.g. from a checkpoint)."""
        return cls(words)

    def to_list(self) -> list[str]:
        """The words in id order: a plain JSON/safetensors-metadata-friendly list."""
        return list(self._words)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Map tokens to ids; unknown tokens get :data:`UNK_ID`."""
        get = self._index.get
        return [get(t, UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Map ids back to words (for debugging and error messages)."""
        return [self._words[i] for i in ids]

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def __getitem__(self, word: str) -> int:
        """The id of ``word``, or :data:`UNK_ID` if it is not in the vocabulary."""
        return self._index.get(word, UNK_ID)

    def __iter__(self) -> Iterator[str]:
        return iter(self._words)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._words == other._words

    def __repr__(self) -> str:
        return f"Vocab({len(self)} words)"

    @property
    def words(self) -> list[str]:
        """The words in id order (a copy)."""
        return list(self._words)
