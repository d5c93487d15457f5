"""cLSTM: the contextual LSTM baseline of the IEIN paper's Tables 1-2 (section 3.2).

Poria et al. (ACL 2017), "Context-Dependent Sentiment Analysis in User-Generated Videos",
the bidirectional contextual LSTM (bc-LSTM).  Context-independent utterance vectors
(Kim's CNN in the paper, here any encoder; ``--encoder glove-cnn`` is the paper's setting)
are read in dialogue order by a bidirectional LSTM, so each utterance's state carries its
neighbours on both sides; a dense layer with ReLU and a softmax layer classify each state:

    h_i = [LSTM_fwd(u_1..u_i); LSTM_bwd(u_n..u_i)]      (BiLSTM over the dialogue)
    z_i = dropout(ReLU(W_z h_i + b_z))                  (dense layer)
    logits_i = W_s z_i + b_s                            (softmax in the loss)

``causal=true`` (for live use) reads forward only: h_i = LSTM_fwd(u_1..u_i), and
:meth:`CLSTM.stream_step` carries the LSTM states from one utterance to the next.

The logits are also the *emission scores* of the cLSTM+CRF model
(:mod:`iein.models.clstm_crf`), which reuses :meth:`CLSTM.emissions` as it is.

Where the public code differs from the paper, and what this file follows.  conv-emotion's
PyTorch bc-LSTM (``declare-lab/conv-emotion``; its ``LSTMModel``, as in
``DialogueRNN/model.py``, built by ``bc-LSTM-pytorch/train_{IEMOCAP,MELD}.py`` with
``D_e = D_h = 100`` and dropout 0.25):

* stacks **two** BiLSTM layers (``num_layers=2``, dropout between them); the paper
  describes one.  Default here: ``layers = 1`` (the paper); ``layers = 2`` gives the code's
  stack, with ``dropout`` between layers as ``nn.LSTM`` applies it;
* runs ``nn.LSTM`` over the zero-padded batch without packing, so the backward direction of
  a dialogue shorter than the batch's longest starts in its padding.  Here each direction
  reads only real utterances (:class:`iein.layers.BiRNN`), so outputs do not depend on
  which dialogues share the batch;
* optionally pools the LSTM states with a "matching attention" before the dense layer
  (not in Poria et al. 2017; not implemented);
* sizes: LSTM 100 per direction (``D_e``) and dense layer 100 (``D_h``): followed, as
  ``hidden`` and ``dense``; dropout 0.25 after the dense layer: followed (the base class
  also applies it to the utterance vectors, as for every model of this package).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batching import Batch
from ..encoders.base import UtteranceEncoder
from ..errors import ConfigError
from ..layers import BiRNN, ForwardRNN
from .base import ConversationModel, ModelConfig


@dataclasses.dataclass
class CLSTMConfig(ModelConfig):
    section: ClassVar[str] = "model clstm"
    hidden: int = 100  # LSTM size per direction (conv-emotion's D_e)
    dense: int = 100  # size of the ReLU dense layer (conv-emotion's D_h)
    layers: int = 1  # stacked BiLSTM layers (paper: 1; conv-emotion's code: 2)
    dropout: float = 0.25  # conv-emotion's bc-LSTM default

    def __post_init__(self) -> None:
        if self.n_labels < 2:
            raise ConfigError(f"{self.section} config field 'n_labels': need at least 2 labels")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{self.section} config field 'dropout' must be in [0, 1)")
        for name in ("hidden", "dense", "layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{self.section} config field {name!r} must be >= 1")


class CLSTM(ConversationModel):
    """BiLSTM over each dialogue's utterance vectors -> dense ReLU -> linear; one step."""

    model_type = "clstm"
    config_class = CLSTMConfig
    reference = "Poria et al. (ACL 2017), bidirectional contextual LSTM (bc-LSTM; IEIN paper's cLSTM)"
    config: CLSTMConfig

    def __init__(self, config: CLSTMConfig, encoder: UtteranceEncoder) -> None:
        super().__init__(config, encoder)
        width = config.hidden * (1 if config.causal else 2)
        sizes = [encoder.output_dim] + [width] * (config.layers - 1)
        rnn = ForwardRNN if config.causal else BiRNN
        self.lstm = nn.ModuleList(rnn(d, config.hidden, cell="lstm") for d in sizes)
        self.dense = nn.Linear(width, config.dense)
        self.classifier = nn.Linear(config.dense, config.n_labels)

    def emissions(self, u: Tensor, n_utts: Tensor) -> Tensor:
        """Per-utterance label scores ``(B, N, L)`` from ``u (B, N, d)``.  Padded positions
        get the scores of a zero LSTM state (the same whatever ``u`` holds there)."""
        h = u
        for i, layer in enumerate(self.lstm):
            h = layer(self.dropout(h) if i else h, n_utts)  # inter-layer dropout, as nn.LSTM's
        z = self.dropout(F.relu(self.dense(h)))
        return self.classifier(z)

    def context(self, u: Tensor, batch: Batch) -> list[Tensor]:
        return [self.emissions(u, batch.n_utts)]

    def stream_start(self) -> list[Any]:
        return [None] * len(self.lstm)

    def stream_emissions(self, u: Tensor, state: list[Any]) -> tuple[Tensor, list[Any]]:
        """The causal emissions ``(1, L)`` of one new utterance ``u (d,)``, each LSTM layer one
        step from its carried state."""
        h, state = u[None], list(state)
        for i, layer in enumerate(self.lstm):
            h, state[i] = layer.step(h, state[i])
        return self.classifier(F.relu(self.dense(h))), state

    def stream_step(self, u: Tensor, speaker: int, state: list[Any]) -> tuple[Tensor, Tensor, list[Any]]:
        logits, state = self.stream_emissions(u, state)
        return torch.softmax(logits.float(), dim=-1), logits.argmax(-1), state
