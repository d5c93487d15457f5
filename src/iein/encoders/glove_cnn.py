"""``glove-cnn``: Kim (2014)'s sentence CNN, the utterance features of the baselines' papers.

Poria et al. (2017, cLSTM), Majumder et al. (2019, DialogueRNN) and Ghosal et al. (2019,
DialogueGCN) all extract textual utterance features this way: convolutions of widths 3, 4
and 5 with 100 feature maps each over the GloVe embeddings, ReLU, max-pooling over time,
concatenation (300), dropout, then a fully connected layer with ReLU (conv-emotion's
``CNNFeatureExtractor`` maps to 100; ``output_size=0`` keeps the raw 300-d concatenation).

Padding safety: positions past an utterance's length are masked to -inf before the max, so
padding never wins the pool; an utterance shorter than a filter is zero-padded to its width
(as Kim's implementation pads every sentence) and its windows over that padding count.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .glove import GloveEncoder, GloveEncoderConfig


@dataclasses.dataclass
class GloveCNNConfig(GloveEncoderConfig):
    section: ClassVar[str] = "encoder glove-cnn"
    filter_sizes: tuple[int, ...] = (3, 4, 5)
    n_filters: int = 100  # feature maps per filter size
    output_size: int = 100  # FC layer after pooling (0 = none: output 3 x n_filters)
    dropout: float = 0.5  # Kim (2014)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.filter_sizes = tuple(int(k) for k in self.filter_sizes)
        if not self.filter_sizes or min(self.filter_sizes) < 1 or self.n_filters < 1 or self.output_size < 0:
            raise ConfigError("encoder glove-cnn: filter_sizes and n_filters must be positive, output_size >= 0")


class GloveCNN(GloveEncoder):
    encoder_type = "glove-cnn"
    config_class = GloveCNNConfig
    config: GloveCNNConfig

    def __init__(self, config: GloveCNNConfig, featurizer) -> None:
        super().__init__(config, featurizer)
        self.convs = nn.ModuleList(nn.Conv1d(config.embedding_dim, config.n_filters, k) for k in config.filter_sizes)
        pooled = config.n_filters * len(config.filter_sizes)
        self.pool_dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(pooled, config.output_size) if config.output_size else None

    @property
    def output_dim(self) -> int:
        cfg = self.config
        return cfg.output_size or cfg.n_filters * len(cfg.filter_sizes)

    def encode_words(self, x: Tensor, lengths: Tensor) -> Tensor:
        width = max(int(lengths.max()), max(self.config.filter_sizes))
        x = F.pad(x[:, :width], (0, 0, 0, width - min(width, x.size(1)))).transpose(1, 2)  # (n, dim, width)
        pooled = []
        for k, conv in zip(self.config.filter_sizes, self.convs):
            h = F.relu(conv(x))  # (n, maps, width - k + 1)
            # window j is real if it starts inside the utterance (or is the first window)
            n_real = (lengths - k + 1).clamp(min=1)
            real = torch.arange(h.size(-1), device=h.device)[None, :] < n_real[:, None]
            pooled.append(h.masked_fill(~real[:, None, :], float("-inf")).amax(dim=-1))
        out = self.pool_dropout(torch.cat(pooled, dim=-1))
        return F.relu(self.fc(out)) if self.fc is not None else out
