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

``causal=true`` (for live use; not in the paper): no backward pass (whatever
``bidirectional`` says) and eq. 12-13 attend to e_1 ... e_t only, so the label of u_t reads
nothing after it.  Eq. 2 already attends to the past only.

What we do differently from the code, without changing the function (eval-mode outputs
match the authors' ``BiModel`` with the same weights up to float rounding; see
``bench/bench_context_speed.py`` for the speed):

* the batch is packed (dialogues sorted longest first), so padded steps are never computed
  and cannot change real outputs; the code runs every step over the whole batch;
* the party GRU runs on the speaker's state only (one row per dialogue), not on all parties
  of every dialogue followed by a mask, and the speaker's state is read with one ``gather``
  instead of a Python loop over the batch (twice per step in the code);
* a dialogue has as many party slots as the batch's largest party index + 1 (any number;
  MELD has up to 9), read from ``batch.speakers``, not a fixed-width one-hot speaker mask;
* the backward direction reverses each dialogue within its own length with one ``gather``
  (:func:`iein.layers.reverse_within_lengths`), where the code flips dialogue by dialogue;
* eq. 12-13 are computed for all t at once (one masked softmax), not in a loop over t.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..data.batching import Batch
from ..encoders.base import UtteranceEncoder
from ..errors import ConfigError
from ..layers import causal_mask, gru_update, reverse_within_lengths
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
        return 2 if self.bidirectional and not self.causal else 1


class DialogueRNNLayer(nn.Module):
    """One direction of DialogueRNN: eq. 1-7 over a batch of right-padded conversations.

    How it stays fast without a per-dialogue Python loop:

    * the batch is packed like ``nn.GRU``'s ``PackedSequence`` (dialogues sorted longest
      first, time-major), so step t works on the dialogues still running: a contiguous block
      of rows, with no padded rows computed at all (MELD batches are about half padding);
    * every input projection that does not depend on the recurrence (the u_t parts of the
      gates of eq. 1 and 5, W_alpha^T u_t of eq. 2) is one matrix product over all utterances
      before the loop; the loop adds the projections of the recurrent parts;
    * the per-dialogue party states live in one ``(dialogues, parties, D_p)`` tensor; the
      speaker's state is read with one ``gather`` and written back with one ``scatter``, and
      only the speaker's state goes through the party GRU.

    Parameter names follow the authors' ``DialogueRNNCell`` (``g_cell``, ``p_cell``,
    ``e_cell``, ``l_cell``; ``context_query`` is their ``attention.transform``).
    """

    def __init__(self, cfg: DialogueRNNConfig, utterance_dim: int) -> None:
        super().__init__()
        d_m, d_g, d_p, d_e = utterance_dim, cfg.global_dim, cfg.party_dim, cfg.emotion_dim
        self.utterance_dim = d_m
        self.party_dim = d_p
        self.g_cell = nn.GRUCell(d_m + d_p, d_g)  # eq. 1, input u_t (+) q_{s(u_t),t-1}
        self.p_cell = nn.GRUCell(d_m + d_g, d_p)  # eq. 5, input u_t (+) c_t
        self.e_cell = nn.GRUCell(d_p, d_e)  # eq. 7
        self.l_cell = nn.GRUCell(d_m + d_p, d_p) if cfg.listener_state else None  # DialogueRNN_l
        self.context_attention = cfg.context_attention
        if cfg.context_attention == "general":
            self.context_query = nn.Linear(d_m, d_g, bias=False)  # W_alpha of eq. 2
        else:
            self.context_score = nn.Linear(d_g, 1, bias=False)
        self.dropout = nn.Dropout(cfg.rec_dropout)

    def forward(self, u: Tensor, speakers: Tensor, lengths: Tensor,
                return_party_states: bool = False) -> tuple[Tensor, Tensor | None]:
        """``u (B, N, D_m)``, ``speakers (B, N)`` party index (-1 at padding), ``lengths (B,)``
        -> emotion states ``e (B, N, D_e)``, zero at padding, and, if asked, every party's
        state after every step ``(B, N, parties, D_p)`` (zero after a dialogue's end).

        Padded utterances are never read: the output at real positions does not depend on them.
        """
        lengths = lengths.cpu()
        packed = pack_padded_sequence(u, lengths, batch_first=True, enforce_sorted=False)
        order = packed.sorted_indices  # longest dialogue first
        spk = pack_padded_sequence(speakers[order], lengths[order.cpu()], batch_first=True).data
        sizes = packed.batch_sizes.tolist()  # dialogues still running at each step
        speaker_states, party_states = self._parties(packed.data, spk, sizes, return_party_states)
        emotions = self._emotions(speaker_states, sizes)
        width = u.size(1)
        out = pad_packed_sequence(packed._replace(data=emotions), batch_first=True, total_length=width)[0]
        if party_states is not None:
            party_states = pad_packed_sequence(packed._replace(data=party_states), batch_first=True,
                                               total_length=width)[0]
        return out, party_states

    def _parties(self, x: Tensor, spk: Tensor, sizes: list[int],
                 return_party_states: bool) -> tuple[Tensor, Tensor | None]:
        """Eq. 1-6 over packed utterances ``x (total, D_m)`` and their party indices ``spk``:
        the speaker's new state q_{s(u_t),t} of every utterance ``(total, D_p)`` and, if asked,
        all party states after every step ``(total, parties, D_p)``."""
        d_m, d_p, d_g = self.utterance_dim, self.party_dim, self.g_cell.hidden_size
        g_cell, p_cell = self.g_cell, self.p_cell
        parties = int(spk.max()) + 1
        slots = spk[:, None, None].expand(-1, 1, d_p).split(sizes)  # speaker's slot, per step
        # projections of the utterance parts of all inputs, for all steps at once: the gates
        # of eq. 1 and 5 (and GRU_L) take [u_t; recurrent part], so W_ih = [W_u | W_rec]
        u_cells = [g_cell, p_cell] + ([self.l_cell] if self.l_cell is not None else [])
        u_gates = F.linear(x, torch.cat([c.weight_ih[:, :d_m] for c in u_cells]),
                           torch.cat([c.bias_ih for c in u_cells])).split(sizes)
        queries = self.context_query(x).split(sizes) if self.context_attention == "general" else None
        # q_{s,t-1} enters eq. 1 as input and eq. 5 as hidden state: one product for both
        w_prev = torch.cat([g_cell.weight_ih[:, d_m:], p_cell.weight_hh])
        b_prev = torch.cat([torch.zeros_like(g_cell.bias_hh), p_cell.bias_hh])
        w_c = p_cell.weight_ih[:, d_m:]  # the c_t columns of eq. 5
        n_g, n_p = 3 * d_g, 3 * d_p
        split_u = [n_g, n_p] + ([n_p] if self.l_cell is not None else [])

        q = x.new_zeros(sizes[0], parties, d_p)  # q_{i,0} = 0
        g = x.new_zeros(sizes[0], d_g)  # g_0 = 0
        hist = x.new_zeros(sizes[0], 0, d_g)  # [g_1 ... g_{t-1}]: (dialogues, t-1, D_g)
        scores = x.new_zeros(sizes[0], 0, 1)  # "simple" attention: w^T g_j, (dialogues, t-1, 1)
        new_states: list[Tensor] = []  # q_{s(u_t),t} of every step
        states: list[Tensor] = []
        for t, b in enumerate(sizes):
            if b < q.size(0):  # dialogues are sorted longest first: the b still running come first
                q, g, hist, scores = q[:b], g[:b], hist[:b], scores[:b]
            gates = u_gates[t].split(split_u, dim=-1)
            speaker_prev = q.gather(1, slots[t]).squeeze(1)  # q_{s(u_t),t-1}
            g_in, p_hid = F.linear(speaker_prev, w_prev, b_prev).split([n_g, n_p], dim=-1)
            g_hid = F.linear(g, g_cell.weight_hh, g_cell.bias_hh)
            g = self.dropout(gru_update(gates[0] + g_in, g_hid, g))  # eq. 1
            p_in = gates[1]
            if t > 0:  # c_1 = 0: no history yet (as in the code)
                s = torch.bmm(hist, queries[t].unsqueeze(-1)) if queries is not None else scores  # eq. 2
                alpha = torch.softmax(s, dim=1)
                c = torch.bmm(alpha.transpose(1, 2), hist).squeeze(1)  # eq. 4
                p_in = p_in + F.linear(c, w_c)
            hist = torch.cat([hist, g.unsqueeze(1)], dim=1)
            if queries is None:
                scores = torch.cat([scores, self.context_score(g).unsqueeze(1)], dim=1)
            speaker = self.dropout(gru_update(p_in, p_hid, speaker_prev))  # eq. 5
            if self.l_cell is not None:
                q = self._listen(q, gates[2], speaker)
            q = q.scatter(1, slots[t], speaker.unsqueeze(1))  # eq. 6: the others keep q_{i,t-1}
            new_states.append(speaker)
            if return_party_states:
                states.append(q)
        return torch.cat(new_states), (torch.cat(states) if return_party_states else None)

    def _listen(self, q: Tensor, u_gates: Tensor, speaker: Tensor) -> Tensor:
        """DialogueRNN_l: q_{i,t} = GRU_L(q_{i,t-1}, u_t (+) q_{s(u_t),t}) for every party
        (the speaker's slot is then overwritten by eq. 5); ``u_gates`` is the u_t part."""
        cell = self.l_cell
        gi = (u_gates + F.linear(speaker, cell.weight_ih[:, self.utterance_dim:])).unsqueeze(1)
        return self.dropout(gru_update(gi, F.linear(q, cell.weight_hh, cell.bias_hh), q))

    def _emotions(self, speaker_states: Tensor, sizes: list[int]) -> Tensor:
        """Eq. 7, e_t = GRU_E(e_{t-1}, q_{s(u_t),t}), over the packed speaker states.  Nothing
        in eq. 1-6 reads e_t, so it runs after them, with its input projection done once."""
        cell = self.e_cell
        gates = F.linear(speaker_states, cell.weight_ih, cell.bias_ih).split(sizes)
        e = speaker_states.new_zeros(sizes[0], cell.hidden_size)  # e_0 = 0
        out = []
        for t, b in enumerate(sizes):
            if b < e.size(0):
                e = e[:b]
            e = self.dropout(gru_update(gates[t], F.linear(e, cell.weight_hh, cell.bias_hh), e))
            out.append(e)
        return torch.cat(out)


class EmotionAttention(nn.Module):
    """Eq. 12-13: e~_t = sum_j beta_tj e_j, beta_t = softmax_j((W_beta e_t + b)^T e_j) over the
    real utterances of the dialogue (the bias is the code's, see the module docstring)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.transform = nn.Linear(dim, dim)

    def forward(self, e: Tensor, mask: Tensor, causal: bool = False) -> Tensor:
        """``e (B, N, d)``, ``mask (B, N)`` -> ``(B, N, d)``; ``causal``: query t reads keys
        j <= t only."""
        scores = torch.bmm(self.transform(e), e.transpose(1, 2))  # (B, query t, key j)
        keys = mask[:, None, :] & causal_mask(e.size(1), e.device) if causal else mask[:, None, :]
        beta = torch.softmax(scores.masked_fill(~keys, float("-inf")), dim=-1)
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
        self.backward_rnn = DialogueRNNLayer(cfg, du) if cfg.directions == 2 else None
        width = cfg.directions * cfg.emotion_dim
        self.emotion_dropout = nn.Dropout(cfg.emotion_dropout)
        self.emotion_attention = EmotionAttention(width) if cfg.attention else None
        self.hidden = nn.Linear(width, cfg.directions * cfg.hidden_dim)  # eq. 8
        self.classifier = nn.Linear(cfg.directions * cfg.hidden_dim, cfg.n_labels)  # eq. 9

    def emotion_states(self, u: Tensor, batch: Batch) -> Tensor:
        """``(B, N, directions * D_e)``: [e_t(forward); e_t(backward)], zero at padding."""
        e, _ = self.forward_rnn(u, batch.speakers, batch.n_utts)
        if self.backward_rnn is not None:
            rev = reverse_within_lengths(batch.n_utts, u.size(1))  # an involution
            e_b, _ = self.backward_rnn(u.gather(1, rev[..., None].expand_as(u)), batch.speakers.gather(1, rev),
                                       batch.n_utts)
            e = torch.cat([e, e_b.gather(1, rev[..., None].expand_as(e_b))], dim=-1)
        return e

    def context(self, u: Tensor, batch: Batch) -> list[Tensor]:
        """Logits ``[(B, N, L)]`` from utterance vectors ``u (B, N, d)``."""
        e = self.emotion_dropout(self.emotion_states(u, batch))
        if self.emotion_attention is not None:
            e = self.emotion_attention(e, batch.mask, self.config.causal)  # eq. 12-13
        hidden = self.dropout(F.relu(self.hidden(e)))  # eq. 8
        return [self.classifier(hidden)]  # eq. 9 (softmax in the loss / step_probs)
