"""DialogueRNN (Majumder et al., AAAI 2019), the BiDialogueRNN+Att variant, section 3.

Equation numbers follow the paper (arXiv:1811.00405v4, section 3 "Our Model").  A
conversation is read one utterance u_t at a time by three GRUs:

* eq. 1    global GRU   g_t = GRU_G(g_{t-1}, u_t (+) q_{s(u_t),t-1})
* eq. 2-4  context      alpha = softmax(u_t^T W_alpha [g_1, ..., g_{t-1}]),
                        c_t = alpha [g_1, ..., g_{t-1}]^T
* eq. 5    party GRU    q_{s(u_t),t} = GRU_P(q_{s(u_t),t-1}, u_t (+) c_t)
* eq. 6    listeners    q_{i,t} = q_{i,t-1} for every i != s(u_t)
* eq. 7    emotion GRU  e_t = GRU_E(e_{t-1}, q_{s(u_t),t})
* eq. 8-9  classifier   l_t = ReLU(W_l e~_t + b_l), P_t = softmax(W_smax l_t + b_smax)

and the variants of section 3.3: BiDialogueRNN runs the recurrence a second time over the
reversed conversation and concatenates the two e_t; "+Att" replaces e_t by
e~_t = beta_t [e_1, ..., e_N]^T with beta_t = softmax(e_t^T W_beta [e_1, ..., e_N]) (eq. 12-13)
before the classifier.  DialogueRNN_l (active listener, ``listener_state=True``) updates every
listener with its own GRU_L instead of eq. 6.

Where the authors' public code (declare-lab/conv-emotion ``DialogueRNN/model.py``, whose
``BiModel`` produced the published numbers) differs from the paper, we follow the code,
because that is what the reported results come from:

* dropout ``rec_dropout`` is applied to g_t, q_{s,t} and e_t *inside* the recurrence (the
  dropped-out state is also the next step's hidden state); the paper does not mention it;
* the emotion states get dropout ``emotion_dropout`` (the code's ``dropout + 0.15``) before
  the attention of eq. 12-13;
* eq. 12's projection has a bias (the code's ``MatchingAttention(att_type='general2')``):
  scores are (W_beta e_t + b)^T e_j, not e_t^T W_beta e_j;
* the listener update of DialogueRNN_l feeds GRU_L with u_t and the speaker's *new* state
  q_{s(u_t),t} (the paper names visual cues v_{i,t}, which text-only data lacks);
* the classifier hidden layer is 2*D_h wide for the bidirectional model.

What we do differently from the code, without changing the function:

* the party GRU runs on the speaker's state only (B rows), not on all parties of every
  dialogue followed by a mask (B x parties rows), and the speaker's state is picked with
  one ``gather`` instead of a Python loop over the batch (twice per step in the code);
* a conversation has as many party slots as the batch's largest party index + 1 (any
  number; MELD has up to 9), and party states change only at real utterances, so padded
  utterances never change real outputs.  The backward pass reverses every dialogue within
  its own length (like :class:`iein.layers.BiRNN`), so padding stays after the real steps.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batching import Batch
from ..encoders.base import UtteranceEncoder
from ..errors import ConfigError
from ..layers import reverse_within_lengths
from .base import ConversationModel, ModelConfig

ContextAttention = Literal["general", "simple"]


@dataclasses.dataclass
class DialogueRNNConfig(ModelConfig):
    """Sizes and switches.  Defaults are the authors' MELD script (``train_MELD.py``:
    D_g = D_p = 150, D_e = D_h = 100, attention "general", dropout 0.1, rec_dropout 0.1,
    no active listener); their IEMOCAP script uses D_g = D_p = D_e = D_h = 500."""

    section: ClassVar[str] = "model dialoguernn"
    global_dim: int = 150  # D_g, the global GRU's state g_t (eq. 1)
    party_dim: int = 150  # D_p, a party state q_{i,t} (eq. 5)
    emotion_dim: int = 100  # D_e, an emotion state e_t (eq. 7), per direction
    hidden_dim: int = 100  # D_h, the classifier's hidden layer l_t (eq. 8), per direction
    bidirectional: bool = True  # BiDialogueRNN (section 3.3)
    attention: bool = True  # "+Att": attention over all emotion states (eq. 12-13)
    listener_state: bool = False  # DialogueRNN_l: listeners updated by GRU_L instead of eq. 6
    #: Attention over the global states for c_t: "general" is eq. 2 (u_t^T W_alpha g_j);
    #: "simple" scores each g_j by w^T g_j alone (the code's SimpleAttention).
    context_attention: ContextAttention = "general"
    rec_dropout: float = 0.1  # on g_t, q_{s,t}, e_t inside the recurrence (code, not paper)
    emotion_dropout: float = 0.25  # on the emotion states (code: dropout + 0.15)

    def __post_init__(self) -> None:
        if self.n_labels < 2:
            raise ConfigError("model config field 'n_labels': need at least 2 labels")
        for name in ("global_dim", "party_dim", "emotion_dim", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model config field {name!r} must be >= 1")
        for name in ("dropout", "rec_dropout", "emotion_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model config field {name!r} must be in [0, 1)")
        if self.context_attention not in ("general", "simple"):
            raise ConfigError(f"model config field 'context_attention': unknown {self.context_attention!r} "
                              "(choices: general, simple)")

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1


class DialogueRNNLayer(nn.Module):
    """One direction of DialogueRNN: eq. 1-7 over a batch of right-padded conversations.

    Each time step is computed for the whole batch at once; the per-dialogue party states
    live in one ``(B, parties, D_p)`` tensor indexed by each utterance's party index.
    Parameter names follow the authors' ``DialogueRNNCell`` (``g_cell``, ``p_cell``,
    ``e_cell``, ``l_cell``) so that their weights map one to one.
    """

    def __init__(self, cfg: DialogueRNNConfig, utterance_dim: int) -> None:
        super().__init__()
        d_m, d_g, d_p, d_e = utterance_dim, cfg.global_dim, cfg.party_dim, cfg.emotion_dim
        self.party_dim = d_p
        self.g_cell = nn.GRUCell(d_m + d_p, d_g)  # eq. 1
        self.p_cell = nn.GRUCell(d_m + d_g, d_p)  # eq. 5
        self.e_cell = nn.GRUCell(d_p, d_e)  # eq. 7
        self.l_cell = nn.GRUCell(d_m + d_p, d_p) if cfg.listener_state else None  # DialogueRNN_l
        self.context_attention = cfg.context_attention
        if cfg.context_attention == "general":
            self.context_query = nn.Linear(d_m, d_g, bias=False)  # W_alpha of eq. 2
        else:
            self.context_score = nn.Linear(d_g, 1, bias=False)
        self.dropout = nn.Dropout(cfg.rec_dropout)

    def forward(self, u: Tensor, speakers: Tensor, mask: Tensor,
                return_party_states: bool = False) -> tuple[Tensor, Tensor | None]:
        """``u (B, N, D_m)``, ``speakers (B, N)`` party index (-1 at padding), ``mask (B, N)``
        True at real utterances -> emotion states ``e (B, N, D_e)`` and, if asked, the party
        states after every step ``(B, N, parties, D_p)`` (for inspection and tests).

        Outputs at padded steps are computed but meaningless; real steps never read them,
        because padding comes after a dialogue's real utterances.
        """
        batch, width, _ = u.shape
        parties = int(speakers.max()) + 1
        d_p = self.party_dim
        # (B, N, 1, D_p) index of the speaker's slot; padding points at slot 0 and writes it back unchanged
        slot = speakers.clamp(min=0)[:, :, None, None].expand(-1, -1, 1, d_p)
        if self.context_attention == "general":
            queries = self.context_query(u).unbind(1)  # W_alpha^T u_t of eq. 2, all t at once
        q = u.new_zeros(batch, parties, d_p)  # q_{i,0} = 0
        g = u.new_zeros(batch, self.g_cell.hidden_size)  # g_0 = 0
        e = u.new_zeros(batch, self.e_cell.hidden_size)  # e_0 = 0
        history: list[Tensor] = []  # g_1 ... g_{t-1}
        scores: list[Tensor] = []  # "simple" attention: w^T g_j, computed once per g_j
        emotions: list[Tensor] = []
        party_states: list[Tensor] = []
        for t, (u_t, slot_t, real_t) in enumerate(zip(u.unbind(1), slot.unbind(1), mask.unbind(1))):
            speaker_prev = q.gather(1, slot_t).squeeze(1)  # q_{s(u_t),t-1}
            g = self.dropout(self.g_cell(torch.cat([u_t, speaker_prev], dim=-1), g))  # eq. 1
            if t == 0:
                c = torch.zeros_like(g)  # no history yet (as in the code)
            else:
                hist = torch.stack(history, dim=1)  # (B, t, D_g)
                if self.context_attention == "general":
                    s = torch.bmm(hist, queries[t].unsqueeze(-1))  # eq. 2: (B, t, 1)
                else:
                    s = torch.stack(scores, dim=1)
                alpha = torch.softmax(s, dim=1)
                c = torch.bmm(alpha.transpose(1, 2), hist).squeeze(1)  # eq. 4
            history.append(g)
            if self.context_attention == "simple":
                scores.append(self.context_score(g))
            speaker = self.dropout(self.p_cell(torch.cat([u_t, c], dim=-1), speaker_prev))  # eq. 5
            # party states change only at real utterances: padding must not touch them
            speaker = torch.where(real_t[:, None], speaker, speaker_prev)
            if self.l_cell is not None:
                q = self._listen(q, u_t, speaker, real_t)
            q = q.scatter(1, slot_t, speaker.unsqueeze(1))  # eq. 6: the others keep q_{i,t-1}
            e = self.dropout(self.e_cell(speaker, e))  # eq. 7
            emotions.append(e)
            if return_party_states:
                party_states.append(q)
        states = torch.stack(party_states, dim=1) if return_party_states else None
        return torch.stack(emotions, dim=1), states

    def _listen(self, q: Tensor, u_t: Tensor, speaker: Tensor, real_t: Tensor) -> Tensor:
        """DialogueRNN_l: q_{i,t} = GRU_L(q_{i,t-1}, u_t (+) q_{s(u_t),t}) for every party
        (the speaker's slot is overwritten by eq. 5 afterwards)."""
        batch, parties, d_p = q.shape
        x = torch.cat([u_t, speaker], dim=-1).unsqueeze(1).expand(-1, parties, -1)
        heard = self.dropout(self.l_cell(x.reshape(batch * parties, -1), q.reshape(-1, d_p)))
        return torch.where(real_t[:, None, None], heard.view(batch, parties, d_p), q)


class EmotionAttention(nn.Module):
    """Eq. 12-13: e~_t = sum_j beta_tj e_j, beta_t = softmax_j((W_beta e_t + b)^T e_j) over the
    real utterances of the dialogue (the bias is the code's, see the module docstring)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.transform = nn.Linear(dim, dim)

    def forward(self, e: Tensor, mask: Tensor) -> Tensor:
        """``e (B, N, d)``, ``mask (B, N)`` -> ``(B, N, d)``."""
        scores = torch.bmm(self.transform(e), e.transpose(1, 2))  # (B, query t, key j)
        beta = torch.softmax(scores.masked_fill(~mask[:, None, :], float("-inf")), dim=-1)
        return torch.bmm(beta, e)


class DialogueRNN(ConversationModel):
    """BiDialogueRNN+Att: both directions of eq. 1-7, eq. 12-13, then eq. 8-9."""

    model_type = "dialoguernn"
    config_class = DialogueRNNConfig
    reference = "Majumder et al. (AAAI 2019), DialogueRNN: An Attentive RNN for Emotion Detection in Conversations"
    config: DialogueRNNConfig

    def __init__(self, cfg: DialogueRNNConfig, encoder: UtteranceEncoder) -> None:
        super().__init__(cfg, encoder)
        du = encoder.output_dim
        self.forward_rnn = DialogueRNNLayer(cfg, du)
        self.backward_rnn = DialogueRNNLayer(cfg, du) if cfg.bidirectional else None
        width = cfg.directions * cfg.emotion_dim
        self.emotion_dropout = nn.Dropout(cfg.emotion_dropout)
        self.emotion_attention = EmotionAttention(width) if cfg.attention else None
        self.hidden = nn.Linear(width, cfg.directions * cfg.hidden_dim)  # eq. 8
        self.classifier = nn.Linear(cfg.directions * cfg.hidden_dim, cfg.n_labels)  # eq. 9

    def emotion_states(self, u: Tensor, batch: Batch) -> Tensor:
        """``(B, N, directions * D_e)``: [e_t(forward); e_t(backward)], zero at padding."""
        mask = batch.mask
        e, _ = self.forward_rnn(u, batch.speakers, mask)
        if self.backward_rnn is not None:
            rev = reverse_within_lengths(batch.n_utts, u.size(1))  # an involution
            e_b, _ = self.backward_rnn(u.gather(1, rev[..., None].expand_as(u)), batch.speakers.gather(1, rev), mask)
            e = torch.cat([e, e_b.gather(1, rev[..., None].expand_as(e_b))], dim=-1)
        return torch.where(mask[..., None], e, 0.0)

    def context(self, u: Tensor, batch: Batch) -> list[Tensor]:
        """Logits ``[(B, N, L)]`` from utterance vectors ``u (B, N, d)``."""
        e = self.emotion_dropout(self.emotion_states(u, batch))
        if self.emotion_attention is not None:
            e = self.emotion_attention(e, batch.mask)  # eq. 12-13
        hidden = self.dropout(F.relu(self.hidden(e)))  # eq. 8
        return [self.classifier(hidden)]  # eq. 9 (softmax in the loss / step_probs)
