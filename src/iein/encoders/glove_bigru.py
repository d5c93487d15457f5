"""``glove-bigru``: the paper's utterance encoder, eq. 1-3 (the IEIN default).

GloVe word embeddings -> BiGRU -> h_i = [fwd_i; bwd_i] -> attention pooling
alpha_i = softmax_i(h_i^T W_u), u = sum_i alpha_i h_i.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch import Tensor

from ..layers import AttentionPooling, BiGRU, dropout_rows, length_mask, packed_rows
from .glove import GloveEncoder, GloveEncoderConfig


@dataclasses.dataclass
class GloveBiGRUConfig(GloveEncoderConfig):
    section: ClassVar[str] = "encoder glove-bigru"
    hidden: int = 100  # GRU size per direction (paper: 100 MELD, 50 IEMOCAP)


class GloveBiGRU(GloveEncoder):
    encoder_type = "glove-bigru"
    config_class = GloveBiGRUConfig
    config: GloveBiGRUConfig

    def __init__(self, config: GloveBiGRUConfig, featurizer) -> None:
        super().__init__(config, featurizer)
        self.gru = BiGRU(config.embedding_dim, config.hidden)
        self.attention = AttentionPooling(2 * config.hidden)

    @property
    def output_dim(self) -> int:
        return 2 * self.config.hidden

    def encode_words(self, x: Tensor, lengths: Tensor) -> Tensor:
        h = self.gru(x, lengths)  # eq. 1: h_i = [fwd_i; bwd_i]
        return self.attention(h, length_mask(lengths, x.size(1)))  # eq. 2-3

    def forward(self, inputs: tuple[Tensor, Tensor]) -> Tensor:
        tokens, lengths = inputs
        if not self.gru.scans(tokens):
            return super().forward(inputs)
        # Training on CPU: the same function on the real words only, never padded (a MELD batch
        # has several times more word slots than words; docs/results.md has the cost).
        batch, width = tokens.shape
        rows = packed_rows(lengths, width)
        x = self.embedding(tokens.reshape(-1)[rows.fwd_pos])
        x = dropout_rows(x, self.dropout.p, self.training, batch * width, rows.fwd_pos)
        h = self.gru.scan_rows(x, rows)  # eq. 1
        return self.attention.pool_rows(h, rows.fwd_pos, batch, width)  # eq. 2-3
