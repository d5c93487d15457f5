"""Iterative Emotion Interaction Network (Lu et al., COLING 2020), section 2 of the paper.

Reading order follows the paper:

* eq. 1-3 (words -> BiGRU -> attention -> u_i) is the ``glove-bigru`` utterance encoder,
  :mod:`iein.encoders.glove_bigru`; IEIN runs on any encoder of :mod:`iein.encoders`
* :class:`ECEncoder`          eq. 4-8  emotion embedding of P, context BiGRU, classifier
* :class:`IEIN`               eq. 9-10 initial prediction P^0, then P^i = EC-Encoder(P^{i-1}, U)
* :func:`iein_loss`           eq. 11-13 cross-entropy of every step + margin on adjacent steps

Variants (Table 3 of the paper) are a config switch, not a separate model:

* ``variant="iein"``        the full model with ``iterations`` = T >= 0 feedback steps;
* ``variant="no_label"``    no emotion embedding and no feedback: the context BiGRU sees U only;
* ``variant="gold_label"``  one EC-Encoder pass whose emotion inputs are the gold labels of the
  *context*; an utterance never sees its own gold label (it sees its own initial prediction
  P^0 instead), otherwise the ablation would just copy the answer.

``causal=true`` (not in the paper; for labelling a conversation while it happens): the
EC-Encoder's GRU reads forward only and eq. 7 becomes h_i = h_fwd_i + [u_i; e_i], so P^k_i
reads P^{k-1} and u of utterances 1..i only; :meth:`IEIN.stream_step` carries the T forward
states, one GRU step per iteration for each new utterance.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batching import IGNORE, Batch
from ..encoders.base import UtteranceEncoder
from ..errors import ConfigError
from ..layers import BiGRU, ForwardRNN, PackedRows, dropout_rows, gru_cell, packed_rows
from .base import ConversationModel, ModelConfig

Variant = Literal["iein", "no_label", "gold_label"]


@dataclasses.dataclass
class IEINConfig(ModelConfig):
    """Model hyper-parameters.  Defaults are the paper's MELD settings (section 3.3); the
    utterance encoder's (eq. 1-3: GRU size 100 MELD / 50 IEMOCAP) are the encoder's config."""

    section: ClassVar[str] = "model iein"
    emotion_dim: int = 32  # size of an emotion embedding x_j (eq. 4)
    iterations: int = 2  # T: number of EC-Encoder feedback steps after P^0
    variant: Variant = "iein"
    lam: float = 5.0  # lambda of eq. 13 (paper: 5 MELD, 50 IEMOCAP)
    #: Detach P^{i-1} before feeding it back.  The paper does not say; with gradients the
    #: T steps form one deep recurrent net.  Kept as a switch for the ablation study.
    detach_feedback: bool = False
    #: Training only: probability of replacing an utterance's fed-back distribution
    #: P^{i-1}_j with the uniform one ("no label information").  Not in the paper (0 there);
    #: it stops the EC-Encoder from trusting fed-back labels blindly, since on the training
    #: set they are far more accurate than they will be on unseen dialogues.
    feedback_dropout: float = 0.0
    #: Training only: probability that a *context* utterance's fed-back distribution is its
    #: gold label (one-hot) instead of the prediction, drawn per utterance and pass.  Not in
    #: the paper; it trains the EC-Encoder on context labels between the Gold Label oracle's
    #: and its own.  An utterance never reads its own gold label (the Gold Label variant's
    #: path, :meth:`ECEncoder.forward_context_only`); at 0, and always at inference, the
    #: passes are the paper's.
    gold_context: float = 0.0
    #: Width of a learned linear map of the utterance vectors before eq. 9-10 (0: none, u as
    #: the encoder gives it).  Not in the paper: eq. 7 ties the EC-Encoder's GRU size to
    #: u's width plus ``emotion_dim``, 416 for MiniLM's 384-d vectors against the paper's 232,
    #: and a GRU's cost grows with the square of its size.
    utterance_proj: int = 0

    def __post_init__(self) -> None:
        if self.variant not in ("iein", "no_label", "gold_label"):
            raise ConfigError(f"model config field 'variant': unknown {self.variant!r}")
        if self.iterations < 0:
            raise ConfigError("model config field 'iterations': T must be >= 0")
        if not 0.0 <= self.feedback_dropout < 1.0:
            raise ConfigError("model config field 'feedback_dropout' must be in [0, 1)")
        if not 0.0 <= self.gold_context <= 1.0:
            raise ConfigError("model config field 'gold_context' must be in [0, 1]")
        if self.gold_context > 0 and self.variant != "iein":
            raise ConfigError("model config field 'gold_context' applies to variant 'iein' only")
        if self.n_labels < 2:
            raise ConfigError("model config field 'n_labels': need at least 2 labels")
        if self.lam < 0:
            raise ConfigError("model config field 'lam' must be >= 0")
        if self.utterance_proj < 0:
            raise ConfigError("model config field 'utterance_proj' must be >= 0 (0: no projection)")

    @property
    def steps(self) -> int:
        """Number of probability tensors the model outputs (P^0 ... P^T)."""
        if self.variant == "iein":
            return self.iterations + 1
        return 2


class ECEncoder(nn.Module):
    """Eq. 4-8, the emotion-interaction based context encoder (one shared instance).

    ``use_emotion=False`` gives the No Label ablation's plain context encoder.
    """

    def __init__(self, cfg: IEINConfig, utterance_dim: int, use_emotion: bool = True) -> None:
        super().__init__()
        # eq. 7 adds the GRU states to the input [u_i; e_i], so the sizes must agree:
        # 2*100 + 32 = 232 (MELD) and 2*50 + 32 = 132 (IEMOCAP), exactly the paper's values.
        dim = utterance_dim + (cfg.emotion_dim if use_emotion else 0)
        # eq. 4: e_i = sum_j p_i^j x_j is a bias-free linear map of p_i; its weight columns are x_j.
        self.emotion_embedding = nn.Linear(cfg.n_labels, cfg.emotion_dim, bias=False) if use_emotion else None
        self.causal = cfg.causal
        self.gru = ForwardRNN(dim, dim) if cfg.causal else BiGRU(dim, dim)  # eq. 5-6
        self.classifier = nn.Linear(dim, cfg.n_labels)  # eq. 8 (softmax applied by the caller)
        self.dropout = nn.Dropout(cfg.dropout)

    def inputs(self, u: Tensor, p: Tensor | None) -> Tensor:
        """[u_i; e_i] of eq. 5-7."""
        if self.emotion_embedding is None:
            return u
        return torch.cat([u, self.emotion_embedding(p)], dim=-1)  # eq. 4

    def forward(self, u: Tensor, p: Tensor | None, n_utts: Tensor, shared: SharedPass | None = None) -> Tensor:
        """``u (B, N, du)``, ``p (B, N, L)`` -> logits ``(B, N, L)``.  ``shared``: the
        P-independent part from :meth:`share` when several passes read the same ``u``."""
        if shared is None:
            shared = self.share(u, n_utts)
        if shared is not None:
            return self._forward_rows(p, shared)
        x = self.inputs(u, p)
        if self.causal:
            h = self.gru(x, n_utts) + x  # eq. 7, forward direction only
        else:
            fwd, bwd = self.gru(x, n_utts).chunk(2, dim=-1)
            h = fwd + bwd + x  # eq. 7
        return self.classifier(self.dropout(h))

    def step(self, u: Tensor, p: Tensor | None, state: Any) -> tuple[Tensor, Any]:
        """The causal pass at one new utterance: ``u (1, du)``, ``p (1, L)`` and the GRU state
        after the previous utterance -> its logits ``(1, L)`` and the new state."""
        x = self.inputs(u, p)
        h, state = self.gru.step(x, state)
        return self.classifier(h + x), state

    def share(self, u: Tensor, n_utts: Tensor) -> SharedPass | None:
        """What the T passes of eq. 10 share, computed once: eq. 5-6's input projection is
        linear, ``W [u_i; e_i] = W_u u_i + W_e e_i``, and only e_i changes between passes.
        Only where the BiGRU runs as a packed scan (training on CPU); ``None`` elsewhere."""
        if self.causal or not self.gru.scans(u):
            return None
        batch, width, du = u.shape
        rows = packed_rows(n_utts, width)
        u_rows = u.reshape(batch * width, du)[rows.fwd_pos]
        return SharedPass(rows, batch, width, u_rows, self.gru.project_rows(u_rows, rows),
                          self.gru.recurrent_weights())

    def _forward_rows(self, p: Tensor | None, s: SharedPass) -> Tensor:
        """:meth:`forward` on the packed rows of the real utterances; the padded slots of the
        returned logits are zero.  Dropout draws the padded layout's mask (:func:`dropout_rows`)."""
        rows, slots, du = s.rows, s.batch * s.width, s.u.size(-1)
        x = self.inputs(s.u, None if p is None else p.reshape(slots, -1)[rows.fwd_pos])  # [u_i; e_i]
        gi = s.gi_u
        if x.size(-1) > du:  # + W_e e_i
            gi = gi + self.gru.project_rows(x[:, du:], rows, start=du, bias=False)
        fwd, bwd = self.gru.scan_projected(gi, rows, s.recurrent)
        h = fwd + bwd + x  # eq. 7
        logits = self.classifier(dropout_rows(h, self.dropout.p, self.training, slots, rows.fwd_pos))
        out = logits.new_zeros(slots, logits.size(-1)).index_copy(0, rows.fwd_pos, logits)
        return out.view(s.batch, s.width, -1)

    def forward_context_only(self, u: Tensor, p_context: Tensor, p_own: Tensor, n_utts: Tensor) -> Tensor:
        """Like :meth:`forward`, but position i reads ``p_context`` only at the *other*
        positions and its own ``p_own`` at i (Gold Label ablation without self-leak).

        The forward state at i is one GRU step from the forward state at i-1 (computed on
        the context inputs) with input [u_i; e(p_own_i)]; the backward state likewise.
        """
        x_ctx = self.inputs(u, p_context)
        x_own = self.inputs(u, p_own)
        if self.causal:  # the forward state before i, then one step on i's own input
            fwd_prev = F.pad(self.gru(x_ctx, n_utts), (0, 0, 1, 0))[:, :-1]
            return self.classifier(self.dropout(gru_cell(x_own, fwd_prev, self.gru.rnn) + x_own))
        fwd, bwd = self.gru(x_ctx, n_utts).chunk(2, dim=-1)
        # state *before* position i: forward shifted right, backward shifted left; padded
        # positions of `out` are zero, so the last real utterance starts from zero too.
        fwd_prev = F.pad(fwd, (0, 0, 1, 0))[:, :-1]
        bwd_next = F.pad(bwd, (0, 0, 0, 1))[:, 1:]
        h = gru_cell(x_own, fwd_prev, self.gru.fwd) + gru_cell(x_own, bwd_next, self.gru.bwd) + x_own
        return self.classifier(self.dropout(h))


@dataclasses.dataclass
class SharedPass:
    """The P-independent part of an EC-Encoder pass (:meth:`ECEncoder.share`): the packed
    rows of the real utterances, their u, the projection ``W_u u + b_ih`` of both GRU
    directions, and the stacked recurrent weights."""

    rows: PackedRows
    batch: int
    width: int
    u: Tensor  # (total, du)
    gi_u: Tensor  # (2, total, 3H)
    recurrent: tuple[Tensor, Tensor]


class IEIN(ConversationModel):
    """The full network: returns the logits of every step P^0 ... P^T."""

    model_type = "iein"
    config_class = IEINConfig
    reference = "Lu et al. (COLING 2020), the Iterative Emotion Interaction Network"
    config: IEINConfig

    def __init__(self, cfg: IEINConfig, encoder: UtteranceEncoder) -> None:
        super().__init__(cfg, encoder)
        du = encoder.output_dim
        self.project = nn.Linear(du, cfg.utterance_proj) if cfg.utterance_proj else None
        du = cfg.utterance_proj or du
        self.initial_classifier = nn.Linear(du, cfg.n_labels)  # eq. 9
        self.ec_encoder = ECEncoder(cfg, du, use_emotion=cfg.variant != "no_label")

    @property
    def n_steps(self) -> int:
        return self.config.steps

    @property
    def is_oracle(self) -> bool:
        return self.config.variant == "gold_label"

    def describe(self) -> str:
        return f"{self.model_type}, variant={self.config.variant}"

    def context(self, u: Tensor, batch: Batch) -> list[Tensor]:
        """Eq. 9-10 from the utterance vectors ``u (B, N, du)``: the logits of P^0 ... P^T.
        The Gold Label variant reads ``batch.labels`` (it is an oracle), and so does training
        with ``gold_context`` (for the context only)."""
        reads_gold = self.is_oracle or (self.training and self.config.gold_context > 0)
        return self.iterate(u, batch.n_utts, batch.labels if reads_gold else None)

    def stream_start(self) -> list[Any]:
        """One EC-Encoder GRU state per pass (T for IEIN, one for No Label), none yet."""
        return [None] * (self.config.iterations if self.config.variant == "iein" else 1)

    def stream_step(self, u: Tensor, speaker: int, state: list[Any]) -> tuple[Tensor, Tensor, list[Any]]:
        """Eq. 9-10 at one new utterance, each pass one GRU step from its carried state."""
        if self.is_oracle:
            raise ConfigError("the gold_label variant cannot stream: it reads gold labels (an oracle)")
        u = u[None] if self.project is None else self.project(u[None])
        steps = [self.initial_classifier(u)]  # eq. 9
        state = list(state)
        if self.config.variant == "no_label":
            logits, state[0] = self.ec_encoder.step(u, None, state[0])
            steps.append(logits)
        for k in range(len(state) if self.config.variant == "iein" else 0):  # eq. 10
            logits, state[k] = self.ec_encoder.step(u, torch.softmax(steps[-1], dim=-1), state[k])
            steps.append(logits)
        logits = torch.cat(steps)
        return torch.softmax(logits.float(), dim=-1), logits.argmax(-1), state

    def iterate(self, u: Tensor, n_utts: Tensor, gold: Tensor | None = None) -> list[Tensor]:
        cfg = self.config
        if self.project is not None:  # padded slots stay zero, as the encoder leaves them
            real = torch.arange(u.size(1), device=u.device)[None, :] < n_utts[:, None].to(u.device)
            u = self.project(u) * real.unsqueeze(-1).to(u.dtype)
        steps = [self.initial_classifier(u)]  # eq. 9 (softmax taken below / in the loss)
        if cfg.variant == "no_label":
            steps.append(self.ec_encoder(u, None, n_utts))
        elif cfg.variant == "gold_label":
            if gold is None:
                raise ConfigError("the gold_label variant needs gold labels at every step (it is an oracle)")
            p_gold = F.one_hot(gold.clamp(min=0), cfg.n_labels).to(u.dtype)
            p_gold = p_gold * (gold >= 0).unsqueeze(-1)  # unlabelled/padded: no label information
            p_own = torch.softmax(steps[0], dim=-1)
            steps.append(self.ec_encoder.forward_context_only(u, p_gold, p_own, n_utts))
        else:
            p = torch.softmax(steps[0], dim=-1)
            mix_gold = self.training and cfg.gold_context > 0 and gold is not None
            shared = None if mix_gold else self.ec_encoder.share(u, n_utts)
            for _ in range(cfg.iterations):  # eq. 10, one shared EC-Encoder
                p_in = p.detach() if cfg.detach_feedback else p
                if self.training and cfg.feedback_dropout > 0:
                    drop = torch.rand(p.shape[:-1], device=p.device) < cfg.feedback_dropout
                    p_in = torch.where(drop.unsqueeze(-1), torch.full_like(p_in, 1.0 / cfg.n_labels), p_in)
                if mix_gold:
                    logits = self.ec_encoder.forward_context_only(u, self._gold_mix(p_in, gold), p_in, n_utts)
                else:
                    logits = self.ec_encoder(u, p_in, n_utts, shared)
                steps.append(logits)
                p = torch.softmax(logits, dim=-1)
        return steps

    def _gold_mix(self, p: Tensor, gold: Tensor) -> Tensor:
        """``p`` with each labelled utterance's distribution replaced by its gold one-hot with
        probability ``gold_context`` (the context the EC-Encoder reads; see the config field)."""
        cfg = self.config
        take = (torch.rand(p.shape[:-1], device=p.device) < cfg.gold_context) & (gold >= 0)
        one_hot = F.one_hot(gold.clamp(min=0), cfg.n_labels).to(p.dtype)
        return torch.where(take.unsqueeze(-1), one_hot, p)

    def loss(self, steps: list[Tensor], batch: Batch, class_weight: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        return iein_loss(steps, batch.labels, self.config.lam, class_weight)


def iein_loss(
    step_logits: list[Tensor],
    labels: Tensor,
    lam: float,
    class_weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Eq. 11-13.

    L = 1/(T+1) sum_i CE(P^i)  +  lambda * 1/T sum_i mean_j max(0, p^i_{j,y} - p^{i+1}_{j,y})

    Eq. 12 only involves the gold class y_j.  We treat p^i (the *earlier* step) as a
    constant in the margin term: its gradient would otherwise push the gold probability of
    the earlier step *down* to close the gap; with lambda = 50 (IEMOCAP) an earlier trial saw that collapse
    training to flat outputs.  The margin therefore only pulls the later step up, which is
    what "punish right-to-wrong modification" asks for.  ``class_weight`` re-weights the
    cross-entropy (an option, off in the paper's presets).
    """
    mask = labels != IGNORE
    y = labels[mask]
    ce_terms = [F.cross_entropy(logits[mask], y, weight=class_weight) for logits in step_logits]
    loss_iter = torch.stack(ce_terms).mean()
    parts = {"ce": float(loss_iter.detach()), "ce_last": float(ce_terms[-1].detach())}
    if len(step_logits) > 1 and lam > 0:
        gold_p = [torch.softmax(l[mask], dim=-1).gather(1, y[:, None]).squeeze(1) for l in step_logits]
        adj = [F.relu(gold_p[i].detach() - gold_p[i + 1]).mean() for i in range(len(gold_p) - 1)]
        loss_adj = torch.stack(adj).mean()
        parts["adj"] = float(loss_adj.detach())
        return loss_iter + lam * loss_adj, parts
    parts["adj"] = 0.0
    return loss_iter, parts
