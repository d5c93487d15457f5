"""Building blocks shared by every model in :mod:`iein.models`.

Each block is padding-safe: padded words and padded utterances never influence the
outputs at real positions (packed RNNs, masked attention), which ``tests/test_model.py``
checks bit for bit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def run_packed(rnn: nn.RNNBase, x: Tensor, lengths: Tensor) -> Tensor:
    """Run a batch-first RNN over padded ``x`` so that padding is never read.

    ``lengths`` must be >= 1.  Outputs at padded positions are exactly zero.
    """
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
    return out


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean mask ``(batch, max_len)``: True at real positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class AttentionPooling(nn.Module):
    """Eq. 2-3: alpha_i = softmax_i(h_i^T W_u); u = sum_i alpha_i h_i (padding masked)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w_u = nn.Linear(dim, 1, bias=False)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        scores = self.w_u(h).squeeze(-1).masked_fill(~mask, float("-inf"))
        alpha = torch.softmax(scores, dim=-1)
        return torch.einsum("bm,bmd->bd", alpha, h)


def gru_cell(x: Tensor, h: Tensor, gru: nn.GRU, reverse: bool = False) -> Tensor:
    """One step of direction ``reverse`` of a single-layer ``nn.GRU``, sharing its weights.

    Used by the Gold Label ablation, which must recompute each position's output with its
    own gold label hidden while reusing the context states of its neighbours.
    """
    sfx = "_reverse" if reverse else ""
    gi = F.linear(x, getattr(gru, "weight_ih_l0" + sfx), getattr(gru, "bias_ih_l0" + sfx))
    gh = F.linear(h, getattr(gru, "weight_hh_l0" + sfx), getattr(gru, "bias_hh_l0" + sfx))
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def scatter_utterances(flat: Tensor, dialog_lengths: Tensor) -> Tensor:
    """Turn ``(total_utterances, d)`` (dialogue-major order) into ``(batch, max_n, d)``.

    Padded utterance slots are zeros; they are never read by the packed context RNN.
    """
    batch, max_n = dialog_lengths.numel(), int(dialog_lengths.max())
    mask = length_mask(dialog_lengths, max_n)
    out = flat.new_zeros(batch, max_n, flat.size(-1))
    out[mask] = flat
    return out
