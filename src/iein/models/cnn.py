"""CNN: the context-free baseline of the IEIN paper's Tables 1-2 (section 3.2).

Kim (2014), "Convolutional Neural Networks for Sentence Classification" (EMNLP): every
utterance is classified on its own, from its own words only; the rest of the dialogue is
never read.  Kim's network is convolutions (widths 3, 4, 5; 100 maps each) over word
embeddings, max-pooling over time, dropout (p = 0.5) on that penultimate layer, and a
softmax layer.  Here the sentence network is the *utterance encoder*, so the Kim model
proper is ``--encoder glove-cnn --arch cnn`` (:mod:`iein.encoders.glove_cnn`); with any
other encoder this is "that encoder's utterance vector, classified without context":

    u_i = encoder(words of utterance i)          (the encoder; Kim's conv + max-pool)
    logits_i = W dropout(u_i) + b                (this file; softmax in the loss)

The dropout is the base class's ``self.dropout`` on the utterance vectors (applied in
:meth:`ConversationModel.utterance_vectors`), so it is not applied a second time here.
The default rate is Kim's 0.5.  (conv-emotion's ``CNNFeatureExtractor``, the
feature extractor of its DialogueRNN/DialogueGCN code, adds a fully connected ReLU
layer to 100 dimensions after the pooling; ``glove-cnn``'s ``output_size`` chooses between
the two, see that module.)
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch import Tensor, nn

from ..data.batching import Batch
from ..encoders.base import UtteranceEncoder
from ..errors import ConfigError
from .base import ConversationModel, ModelConfig


@dataclasses.dataclass
class CNNConfig(ModelConfig):
    section: ClassVar[str] = "model cnn"
    dropout: float = 0.5  # Kim (2014): dropout on the penultimate layer

    def __post_init__(self) -> None:
        if self.n_labels < 2:
            raise ConfigError(f"{self.section} config field 'n_labels': need at least 2 labels")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{self.section} config field 'dropout' must be in [0, 1)")


class CNN(ConversationModel):
    """One linear layer on each utterance vector: no context, one step."""

    model_type = "cnn"
    reads_context = False
    config_class = CNNConfig
    reference = "Kim (EMNLP 2014), CNN sentence classifier without context (IEIN paper's CNN baseline)"
    config: CNNConfig

    def __init__(self, config: CNNConfig, encoder: UtteranceEncoder) -> None:
        super().__init__(config, encoder)
        self.classifier = nn.Linear(encoder.output_dim, config.n_labels)

    def context(self, u: Tensor, batch: Batch) -> list[Tensor]:
        """``u (B, N, d)`` (already dropped out) -> ``[(B, N, L)]``; position i reads u_i only,
        so padded rows cannot reach real ones."""
        return [self.classifier(u)]
