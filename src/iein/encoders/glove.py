"""What the GloVe encoders share: the word featurizer and the embedding layer.

The featurizer tokenises (GloVe-6B style), builds the vocabulary from the *training split
only* (held-out words map to ``<unk>`` exactly as unseen words will at prediction time) and
looks up pretrained vectors for it.  ``glove-bigru`` and ``glove-cnn`` read the same token
ids, so one prepared corpus serves both.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..data.batching import MAX_WORDS
from ..data.conversation import Conversation
from ..errors import ConfigError
from ..text.embeddings import build_embedding_matrix, coverage, format_coverage, load_vectors
from ..text.tokenizer import tokenize
from ..text.vocab import UNK, Vocab
from .base import EncoderConfig, Featurizer, Log, UtteranceEncoder


@dataclasses.dataclass
class GloveEncoderConfig(EncoderConfig):
    vocab_size: int = 2  # set from the training vocabulary
    embedding_dim: int = 50  # set from the vectors
    max_words: int = MAX_WORDS  # longer utterances are truncated (memory bound)
    freeze_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.max_words < 1:
            raise ConfigError("encoder config field 'max_words' must be >= 1")


def encode_text(text: str, vocab: Vocab, max_words: int = MAX_WORDS) -> np.ndarray:
    ids = vocab.encode(tokenize(text)[:max_words])
    if not ids:  # an empty utterance still occupies its slot in the dialogue
        ids = [vocab.encode([UNK])[0]]
    return np.asarray(ids, dtype=np.int64)


class WordFeaturizer(Featurizer):
    """Utterance -> int64 token-id array (length >= 1, at most ``max_words``)."""

    def __init__(self, vocab: Vocab, max_words: int = MAX_WORDS, embeddings: np.ndarray | None = None,
                 provenance: dict[str, Any] | None = None, coverage_stats: dict[str, Any] | None = None) -> None:
        self.vocab = vocab
        self.max_words = max_words
        self.embeddings = embeddings  # pretrained matrix, only when built for training
        self.provenance = dict(provenance or {})
        self.coverage = dict(coverage_stats or {})

    def featurize(self, conv: Conversation) -> list[np.ndarray]:
        return [encode_text(u.text, self.vocab, self.max_words) for u in conv.utterances]

    def state(self) -> dict[str, Any]:
        return {"vocab": self.vocab.to_list(), "max_words": self.max_words}

    @classmethod
    def from_state(cls, state: dict[str, Any], config: EncoderConfig) -> "WordFeaturizer":
        return cls(Vocab.from_list(state["vocab"]), int(state.get("max_words", MAX_WORDS)))

    def key(self) -> str:
        return f"words/{self.provenance.get('name')}/{self.provenance.get('sha256', '')}/{self.max_words}"

    @classmethod
    def build(cls, train: Sequence[Conversation], vectors: str | Path | None, max_words: int,
              log: Log) -> "WordFeaturizer":
        train_tokens = [tokenize(u.text) for c in train for u in c.utterances]
        vocab = Vocab.build(train_tokens)
        wv = load_vectors(vectors, restrict_to=set(vocab.to_list()))
        matrix, _ = build_embedding_matrix(vocab, wv, seed=0)
        cov = coverage(train_tokens, wv)
        log(f"vectors {wv.provenance.get('name')} ({wv.vectors.shape[1]}d): {format_coverage(cov)}")
        return cls(vocab, max_words, matrix, dict(wv.provenance), cov)


def collate_tokens(features: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
    """Token-id arrays -> ``tokens (n, max_len)`` (0 = padding) and ``lengths (n,)``."""
    lengths = np.fromiter((len(t) for t in features), dtype=np.int64, count=len(features))
    tokens = np.zeros((len(features), int(lengths.max()) if len(features) else 1), dtype=np.int64)
    tokens[np.arange(tokens.shape[1])[None, :] < lengths[:, None]] = (
        np.concatenate(features) if len(features) else np.zeros(0, dtype=np.int64))
    return torch.from_numpy(tokens), torch.from_numpy(lengths)


class GloveEncoder(UtteranceEncoder):
    """Base of the word-level encoders: an embedding layer initialised from GloVe."""

    config: GloveEncoderConfig
    #: Word slots (utterances x width) per inference chunk; length-sorting within it keeps
    #: padding low and memory bounded whatever the number or length of the utterances.
    chunk_tokens: int = 32_768

    def __init__(self, config: GloveEncoderConfig, featurizer: Featurizer) -> None:
        super().__init__(config, featurizer)
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=0)
        self.embedding.weight.requires_grad_(not config.freeze_embeddings)
        self.dropout = nn.Dropout(config.dropout)

    @classmethod
    def build_featurizer(cls, config: EncoderConfig, train: Sequence[Conversation], log: Log,
                         vectors: str | Path | None = None, **_: Any) -> tuple[Featurizer, dict[str, Any]]:
        assert isinstance(config, GloveEncoderConfig)
        feat = WordFeaturizer.build(train, vectors, config.max_words, log)
        return feat, {"vocab_size": len(feat.vocab), "embedding_dim": int(feat.embeddings.shape[1])}

    @classmethod
    def features_key(cls, config: dict[str, Any]) -> str:
        """Every GloVe encoder reads the same token ids: only ``max_words`` changes them."""
        return f"words:{config.get('max_words', MAX_WORDS)}"

    @classmethod
    def featurizer_from_state(cls, state: dict[str, Any], config: EncoderConfig) -> Featurizer:
        return WordFeaturizer.from_state(state, config)

    def init_pretrained(self) -> None:
        matrix = getattr(self.featurizer, "embeddings", None)
        if matrix is None:
            return
        if tuple(matrix.shape) != (self.config.vocab_size, self.config.embedding_dim):
            raise ConfigError(f"embedding matrix {tuple(matrix.shape)} does not match vocab_size x "
                              f"embedding_dim = {self.config.vocab_size} x {self.config.embedding_dim}")
        with torch.no_grad():
            self.embedding.weight.copy_(torch.from_numpy(matrix))

    def collate(self, features: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
        return collate_tokens(features)

    def forward(self, inputs: tuple[Tensor, Tensor]) -> Tensor:
        tokens, lengths = inputs
        return self.encode_words(self.dropout(self.embedding(tokens)), lengths)

    def encode_words(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``x (n, max_words, dim)`` embedded words -> ``(n, output_dim)``."""
        raise NotImplementedError

    def encode_many(self, features: Sequence[np.ndarray]) -> Tensor:
        """Length-sorted chunks of at most :attr:`chunk_tokens` word slots, so one long
        utterance does not pad thousands of short ones."""
        lengths = np.fromiter((len(t) for t in features), dtype=np.int64, count=len(features))
        order = np.argsort(lengths, kind="stable")
        device = self.device
        out = torch.empty(len(features), self.output_dim, device=device)
        start = 0
        while start < len(order):
            end = start + 1
            # sorted ascending: the chunk's width is the length of its last utterance
            while end < len(order) and (end + 1 - start) * lengths[order[end]] <= self.chunk_tokens:
                end += 1
            idx = order[start:end]
            tokens, lens = collate_tokens([features[i] for i in idx])
            out[torch.from_numpy(idx).to(device)] = self((tokens.to(device), lens.to(device)))
            start = end
        return out

    def param_groups(self, weight_decay: float, embedding_weight_decay: float) -> list[dict[str, Any]]:
        """Adam adds L2 *before* its per-parameter normalisation, so an embedding row whose
        word is absent from a batch gets a pure decay gradient and moves ~lr towards zero
        at every step: the pretrained vectors would be erased.  Hence their own decay."""
        emb = self.embedding.weight
        rest = [p for p in self.parameters() if p.requires_grad and p is not emb]
        groups = [{"params": rest, "weight_decay": weight_decay}] if rest else []
        if emb.requires_grad:
            groups.append({"params": [emb], "weight_decay": embedding_weight_decay})
        return groups
