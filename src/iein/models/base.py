"""The conversation-model contract every model in this folder follows.

A model is an ``nn.Module`` with a ``model_type`` and a config dataclass; it owns an
utterance encoder (any of :mod:`iein.encoders`, seen only through ``output_dim``), its loss
and its output type.  Everything above this folder (trainer, evaluation, Recognizer,
server, reproduce) depends on this contract only, never on a concrete class:

* ``forward(batch, class_weight=None) -> ModelOutput``: the logits of every step (a list of
  one for single-step models; IEIN returns P^0 ... P^T) and, when the batch has labels,
  the loss;
* ``context(u, batch) -> steps``: the same from ready utterance vectors ``u (B, N, d)``;
  inference runs the encoder in bounded chunks and then calls this;
* ``loss(steps, batch, class_weight)``, ``decode`` (label ids of every step; argmax unless
  the model decodes otherwise, e.g. Viterbi), ``step_probs`` (what is reported as
  probabilities), ``param_groups`` (optimiser groups, nanoGPT's ``configure_optimizers``);
* ``n_steps``, and ``is_oracle`` for ablations that read gold labels at inference;
* ``causal`` (config ``causal=true`` where the model admits it): the outputs at utterance t
  read utterances 1..t only, so the model can label a conversation while it happens;
  ``stream_start``/``stream_step`` then label one new utterance at a time.  The default
  ``stream_step`` recomputes the prefix (correct for any causal model); a model with
  recurrent state overrides it to carry that state, constant work per utterance.

Padded utterances (beyond ``batch.n_utts``) must never change the outputs at real
positions: ``tests/test_models.py`` checks it bit for bit for every registered model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..configuration import Config
from ..data.batching import IGNORE, Batch
from ..encoders.base import UtteranceEncoder
from ..errors import ConfigError
from ..layers import scatter_utterances


@dataclasses.dataclass
class ModelConfig(Config):
    section: ClassVar[str] = "model"
    n_labels: int = 7  # set from the corpus
    dropout: float = 0.1  # on the utterance vectors and before classifiers
    #: Read past and present utterances only (a live model); each model says what changes.
    causal: bool = False


@dataclass
class ModelOutput:
    steps: list[Tensor]  # logits of every step, each (B, N, L); the prediction is the last
    loss: Tensor | None = None
    parts: dict[str, float] = field(default_factory=dict)  # loss terms, for the epoch log


@dataclass
class PrefixState:
    """The default streaming state: the conversation so far, recomputed at every step."""

    vectors: list[Tensor] = field(default_factory=list)  # u_1 ... u_t, each (d,)
    speakers: list[int] = field(default_factory=list)


class ConversationModel(nn.Module):
    model_type: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]
    #: One line for ``iein presets`` and the report: the paper the model comes from.
    reference: ClassVar[str] = ""
    #: False for losses without per-utterance terms (a CRF's sequence likelihood).
    supports_class_weight: ClassVar[bool] = True
    #: False for a model whose label of an utterance depends on that utterance alone (the
    #: CNN baseline): it may train on batches of single utterances (``batch_unit``).
    reads_context: ClassVar[bool] = True
    #: Whether the model has a causal form (``causal=true``); one without refuses the switch.
    supports_causal: ClassVar[bool] = True

    def __init__(self, config: ModelConfig, encoder: UtteranceEncoder) -> None:
        super().__init__()
        if config.causal and not self.supports_causal:
            raise ConfigError(f"{config.section} config field 'causal': {self.model_type} has no causal form")
        self.config = config
        self.utterance_encoder = encoder
        self.dropout = nn.Dropout(config.dropout)

    # -- what every model must say

    def describe(self) -> str:
        """The model in a few words for ``repr`` and logs: its type, plus any setting that
        changes what it computes (IEIN names its variant)."""
        return self.model_type

    @property
    def n_steps(self) -> int:
        """Number of logits tensors :meth:`context` returns."""
        return 1

    @property
    def is_oracle(self) -> bool:
        """True for ablations that read gold labels at inference (cannot label new text)."""
        return False

    @property
    def causal(self) -> bool:
        """Whether the outputs at utterance t read utterances 1..t only (``causal=true``, or a
        model that reads no context at all)."""
        return bool(self.config.causal) or not self.reads_context

    def context(self, u: Tensor, batch: Batch) -> list[Tensor]:
        """Step logits ``[(B, N, L), ...]`` from utterance vectors ``u (B, N, d)``."""
        raise NotImplementedError

    # -- streaming (causal models only)

    def stream_start(self) -> Any:
        """The state of an empty conversation, for :meth:`stream_step`."""
        return PrefixState()

    def stream_step(self, u: Tensor, speaker: int, state: Any) -> tuple[Tensor, Tensor, Any]:
        """Label the newest utterance of a conversation from its vector ``u (d,)`` and its
        party index: its probabilities of every step ``(S, L)``, its label ids ``(S,)``, and
        the state to pass with the next utterance.  Eval mode, no gradients.  This default
        reruns :meth:`context` on the prefix (work grows with its length)."""
        state.vectors.append(u)
        state.speakers.append(speaker)
        n = len(state.vectors)
        batch = Batch(None, torch.tensor([n], device=u.device), torch.tensor([state.speakers], device=u.device),
                      torch.full((1, n), IGNORE, dtype=torch.long, device=u.device), [0])
        steps = self.context(torch.stack(state.vectors)[None], batch)
        return self.step_probs(steps, batch)[0, :, -1], self.decode(steps, batch)[0, :, -1], state

    # -- shared behaviour (override where the paper says otherwise)

    def utterance_vectors(self, batch: Batch) -> Tensor:
        """``(B, N, d)``: the encoder over all utterances of the batch, then dialogue padding."""
        flat = self.utterance_encoder(batch.inputs)
        return self.dropout(scatter_utterances(flat, batch.n_utts))

    def forward(self, batch: Batch, class_weight: Tensor | None = None) -> ModelOutput:
        steps = self.context(self.utterance_vectors(batch), batch)
        out = ModelOutput(steps)
        if bool((batch.labels != IGNORE).any()):
            out.loss, out.parts = self.loss(steps, batch, class_weight)
        return out

    def loss(self, steps: list[Tensor], batch: Batch, class_weight: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy over labelled utterances, averaged over steps."""
        mask = batch.labels != IGNORE
        y = batch.labels[mask]
        terms = [F.cross_entropy(s[mask], y, weight=class_weight) for s in steps]
        loss = torch.stack(terms).mean()
        return loss, {"ce": float(loss.detach())}

    def decode(self, steps: list[Tensor], batch: Batch) -> Tensor:
        """Label ids of every step, ``(B, S, N)``."""
        return torch.stack([s.argmax(-1) for s in steps], dim=1)

    def step_probs(self, steps: list[Tensor], batch: Batch) -> Tensor:
        """Class probabilities of every step, ``(B, S, N, L)``."""
        return torch.stack([torch.softmax(s.float(), dim=-1) for s in steps], dim=1)

    def param_groups(self, weight_decay: float, embedding_weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Optimiser groups: the encoder's own (embeddings get their own decay), then the rest."""
        groups = self.utterance_encoder.param_groups(weight_decay, embedding_weight_decay)
        enc = {id(p) for p in self.utterance_encoder.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in enc]
        if rest:
            groups.append({"params": rest, "weight_decay": weight_decay})
        return groups
