"""Neural building blocks shared by the encoders (:mod:`iein.encoders`) and the context
models (:mod:`iein.models`); below both in the import order.

Each block is padding-safe: padded words and padded utterances never influence the
outputs at real positions (each direction of a BiGRU/BiLSTM reads a sequence's real items before
its padding; attention is masked), which ``tests/test_iein_model.py`` checks bit for bit.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


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

    def pool_rows(self, h: Tensor, pos: Tensor, batch: int, width: int) -> Tensor:
        """The same pooling over packed rows ``h (total, d)``, row k being position
        ``pos[k]`` of a ``(batch, width)`` padded layout: only the scores are padded (one
        number per slot, for the masked softmax), so no padded ``d``-wide tensor is made,
        read or differentiated.  -> ``(batch, d)``."""
        scores = self.w_u(h).squeeze(-1)
        padded = scores.new_full((batch * width,), float("-inf")).index_put((pos,), scores)
        alpha = torch.softmax(padded.view(batch, width), dim=-1).view(-1)[pos]
        return h.new_zeros(batch, h.size(-1)).index_add(0, pos // width, alpha[:, None] * h)


#: The cost of one sequential RNN step (its Python/dispatch overhead, forward and backward)
#: in units of one sequence's work in that step: measured on MELD training batches
#: (1 thread, forward+backward, ``bench/bench_bigru.py --real``), 16 and 32 were the fastest.
STEP_COST = 16

def length_groups(sorted_lengths: list[int], step_cost: int = STEP_COST) -> list[tuple[int, int]]:
    """Split ascending sequence lengths into contiguous groups ``[(start, end), ...]`` that
    minimise ``sum over groups of max_len * (rows + step_cost)``: every group runs
    ``max_len`` sequential steps (a fixed overhead each) over its rows.  One group wastes
    work on padding; one group per length pays the step overhead too often.  Exact dynamic
    programme over the cut points where the length changes (at most ``max_words`` of them).
    """
    n = len(sorted_lengths)
    cuts = [0] + [i for i in range(1, n) if sorted_lengths[i] != sorted_lengths[i - 1]] + [n]
    best = [0.0] + [float("inf")] * (len(cuts) - 1)
    prev = [0] * len(cuts)
    for j in range(1, len(cuts)):
        longest = sorted_lengths[cuts[j] - 1]
        for i in range(j):
            cost = best[i] + longest * (cuts[j] - cuts[i] + step_cost)
            if cost < best[j]:
                best[j], prev[j] = cost, i
    groups, j = [], len(cuts) - 1
    while j > 0:
        groups.append((cuts[prev[j]], cuts[j]))
        j = prev[j]
    return groups[::-1]


class PackedRows(NamedTuple):
    """The packed layout of right-padded sequences ``(batch, width)``: rows sorted by length
    (longest first), step-major, so that step t owns the next ``batch_sizes[t]`` packed rows
    and the sequences still running at step t are a prefix of the previous step's (as in
    ``PackedSequence``).  Built by :func:`packed_rows`."""

    #: flat position (into ``batch * width``) that the forward direction reads at each packed row
    fwd_pos: Tensor
    #: the same for the backward direction (each sequence reversed within its own length)
    bwd_pos: Tensor
    batch_sizes: list[int]
    #: for each backward packed row, the forward packed row of the same position
    #: (``fwd_pos[bwd_rows] == bwd_pos``), and the inverse permutation
    bwd_rows: Tensor
    fwd_rows: Tensor


def packed_rows(lengths: Tensor, width: int) -> PackedRows:
    """The :class:`PackedRows` of sequences with ``lengths`` (each >= 1) padded to ``width``."""
    order = torch.argsort(lengths, descending=True, stable=True)
    lens = lengths[order]
    steps = torch.arange(int(lens[0]), device=lengths.device)
    active = steps[:, None] < lens[None, :]  # (max_len, batch): step-major
    step, rank = active.nonzero(as_tuple=True)  # within a step, rows keep the sorted order
    row = order[rank] * width
    fwd_pos, bwd_pos = row + step, row + lens[rank] - 1 - step
    total = fwd_pos.numel()
    row_of = torch.empty(lengths.numel() * width, dtype=torch.long, device=lengths.device)
    row_of[fwd_pos] = torch.arange(total, device=lengths.device)
    bwd_rows = row_of[bwd_pos]
    fwd_rows = torch.empty_like(bwd_rows)
    fwd_rows[bwd_rows] = torch.arange(total, device=lengths.device)
    return PackedRows(fwd_pos, bwd_pos, active.sum(1).tolist(), bwd_rows, fwd_rows)


def dropout_rows(x: Tensor, p: float, training: bool, slots: int, rows: Tensor) -> Tensor:
    """Dropout of the packed rows ``x (len(rows), d)`` of a padded ``(slots, d)`` tensor,
    with exactly the mask ``F.dropout`` would draw for the padded tensor (on CPU:
    ``bernoulli_(1 - p)`` over all of it, scaled by ``1 / (1 - p)``), read at ``rows``.
    The padded slots' draws are wasted, on purpose: the random stream, and so every later
    draw of a seeded run, stays what it was when the padded tensor was dropped out."""
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0
    noise = x.new_empty(slots, x.size(-1)).bernoulli_(1 - p).div_(1 - p)
    return x * noise[rows]


class _BiGRUScan(torch.autograd.Function):
    """Both directions of a GRU recurrence, eq. 1 / eq. 5-6, over packed rows, with a
    hand-written backward pass.

    Why not ``nn.GRU``: on CPU its autograd graph has about ten nodes per time step, and
    each step's backward multiplies out and accumulates its own ``W_hh`` gradient.  Here
    one step is a handful of ops for *both* directions at once (``baddbmm`` over a
    stacked ``(2, 3H, H)`` weight), padding is never computed (the packed layout of
    :func:`packed_rows`), and the weight gradient is one matrix product over every
    step after the loop.  Same function as ``nn.GRU`` (PyTorch's gate order r, z, n and
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``), equal up to float rounding, which
    ``tests/test_iein_model.py`` checks against it in float64, values and gradients.

    ``gi (2, total, 3H)``: the input projections ``W_ih x + b_ih`` of both directions in
    packed order; ``w_hh (2, 3H, H)``, ``b_hh (2, 3H)``; the initial state is zero.
    Returns the states ``(2, total, H)`` in packed order.
    """

    @staticmethod
    def forward(ctx, gi: Tensor, w_hh: Tensor, b_hh: Tensor, batch_sizes: list[int]) -> Tensor:
        _, total, h3 = gi.shape
        hid = h3 // 3
        w_t, bias = w_hh.transpose(1, 2), b_hh[:, None, :]
        out = gi.new_empty(2, total, hid)
        # saved for backward: the gates r, z (sigmoid outputs), n (tanh output), W_hh h + b_hh,
        # and h - n
        rz_all, new_all = gi.new_empty(2, total, 2 * hid), gi.new_empty(2, total, hid)
        gh_all, diff_all = gi.new_empty(2, total, h3), gi.new_empty(2, total, hid)
        # Every per-step view is made up front by one torch.split per buffer: in this loop a
        # slice costs as much as an arithmetic op (Python dispatch), so the loop only computes.
        split = lambda t: t.split(batch_sizes, dim=1)  # noqa: E731
        g_rz, g_n = split(gi[..., :2 * hid]), split(gi[..., 2 * hid:])
        gh, gh_rz, gh_n = split(gh_all), split(gh_all[..., :2 * hid]), split(gh_all[..., 2 * hid:])
        rz, r, z = split(rz_all), split(rz_all[..., :hid]), split(rz_all[..., hid:])
        new, diff, h = split(new_all), split(diff_all), split(out)
        for t, n in enumerate(batch_sizes):
            if t == 0:  # h_0 = 0
                gh[0].copy_(bias.expand(2, n, h3))
            else:  # the sequences still running at step t are a prefix of those at t - 1
                hp = h[t - 1][:, :n]
                torch.baddbmm(bias, hp, w_t, out=gh[t])
            torch.add(g_rz[t], gh_rz[t], out=rz[t]).sigmoid_()
            torch.addcmul(g_n[t], r[t], gh_n[t], out=new[t]).tanh_()
            if t == 0:
                torch.neg(new[0], out=diff[0])
            else:
                torch.sub(hp, new[t], out=diff[t])
            torch.addcmul(new[t], z[t], diff[t], out=h[t])  # h' = (1 - z) * n + z * h = n + z * (h - n)
        ctx.batch_sizes = batch_sizes
        ctx.save_for_backward(w_hh, rz_all, new_all, gh_all, diff_all, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        w_hh, rz_all, new_all, gh_all, diff_all, out = ctx.saved_tensors
        sizes: list[int] = ctx.batch_sizes
        _, total, hid = out.shape
        d_h = d_out.clone()  # d h_t: the output's gradient, plus what step t + 1 sends back
        d_gh = d_out.new_empty(2, total, 3 * hid)  # d(W_hh h + b_hh), per gate
        d_gin = d_out.new_empty(2, total, hid)  # d(W_in x + b_in); r and z share d_gh's
        split = lambda t: t.split(sizes, dim=1)  # noqa: E731
        dh, dg, dg_rz, dg_r, dg_z, dg_n = (split(d_h), split(d_gh), split(d_gh[..., :2 * hid]),
                                           split(d_gh[..., :hid]), split(d_gh[..., hid:2 * hid]),
                                           split(d_gh[..., 2 * hid:]))
        d_a, rz, r, z = split(d_gin), split(rz_all), split(rz_all[..., :hid]), split(rz_all[..., hid:])
        new, gh_n, diff = split(new_all), split(gh_all[..., 2 * hid:]), split(diff_all)
        tanh_backward, sigmoid_backward = torch.ops.aten.tanh_backward.grad_input, torch.ops.aten.sigmoid_backward.grad_input
        for t in range(len(sizes) - 1, -1, -1):
            d = dh[t]
            # h' = n + z * (h - n): d n = d * (1 - z), d z = d * (h - n), d h = d * z + ...
            tanh_backward(torch.addcmul(d, d, z[t], value=-1), new[t], grad_input=d_a[t])
            torch.mul(d_a[t], gh_n[t], out=dg_r[t])  # d r = d a * (W_hn h + b_hn)
            torch.mul(d, diff[t], out=dg_z[t])
            sigmoid_backward(dg_rz[t], rz[t], grad_input=dg_rz[t])
            torch.mul(d_a[t], r[t], out=dg_n[t])  # d(W_hn h + b_hn) = d a * r
            if t > 0:  # into d h_{t-1} of the rows still running at step t
                dh[t - 1][:, :sizes[t]].addcmul_(d, z[t]).baddbmm_(dg[t], w_hh)
        d_gi = torch.cat([d_gh[..., :2 * hid], d_gin], dim=-1)
        first = sizes[0]
        if total > first:  # every packed row after step 0 read the state of its previous step
            n_t = torch.tensor(sizes, device=out.device)
            step = torch.repeat_interleave(torch.arange(1, len(sizes), device=out.device), n_t[1:])
            prev_rows = torch.arange(first, total, device=out.device) - n_t[step - 1]
            d_w = torch.bmm(d_gh[:, first:].transpose(1, 2), out[:, prev_rows])
        else:
            d_w = torch.zeros_like(w_hh)
        return d_gi, d_w, d_gh.sum(1), None


RNN_CELLS: dict[str, type[nn.RNNBase]] = {"gru": nn.GRU, "lstm": nn.LSTM}


def rnn_class(cell: str) -> type[nn.RNNBase]:
    """The ``nn`` class of an RNN cell name (``gru``, ``lstm``)."""
    if cell not in RNN_CELLS:
        raise ValueError(f"unknown RNN cell {cell!r} (choices: {', '.join(RNN_CELLS)})")
    return RNN_CELLS[cell]


class BiRNN(nn.Module):
    """Bidirectional single-layer GRU or LSTM (``cell``) over right-padded sequences.

    Built from two unidirectional RNNs (``fwd``, ``bwd``): the forward one reads each
    sequence as stored, the backward one each sequence reversed *within its own length*,
    so padding never reaches a real position.  Three execution paths, one function:

    * training a GRU on CPU: :class:`_BiGRUScan`, both directions in one packed scan with a
      hand-written backward (faster than length groups: ``bench/bench_bigru.py --real``);
    * training otherwise (LSTM, GPU): ``nn.GRU``/``nn.LSTM`` over length-sorted groups
      (:func:`length_groups`), faster on CPU than ``pack_padded_sequence``, whose backward is
      dominated by copies; on a GPU it is cuDNN's kernel;
    * inference: one packed bidirectional call (:meth:`_forward_packed`).

    Outputs at padded positions are zero.  The LSTM differs only in the ``nn`` class (its
    state tuple is never read).
    """

    #: Train a GRU on CPU with :class:`_BiGRUScan` (the same function as length groups, faster);
    #: :func:`use_gru_scan` turns it off for one model, for the tests and benchmarks that compare.
    gru_scan: bool = True

    def __init__(self, input_size: int, hidden_size: int, cell: str = "gru") -> None:
        super().__init__()
        self.cell = cell
        self.hidden_size = hidden_size
        rnn = rnn_class(cell)
        self.fwd = rnn(input_size, hidden_size, batch_first=True)
        self.bwd = rnn(input_size, hidden_size, batch_first=True)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``x (B, L, d)``, ``lengths (B,)`` >= 1 -> ``(B, L, 2*hidden)``."""
        if not torch.is_grad_enabled():
            return self._forward_packed(x, lengths)
        if self.scans(x):
            return self._forward_scan(x, lengths)
        return self._forward_groups(x, lengths)

    def scans(self, x: Tensor) -> bool:
        """Whether a forward pass over ``x`` now takes the :class:`_BiGRUScan` path (training
        a GRU on CPU), for callers that can hand it packed rows (:meth:`scan_rows`)."""
        return torch.is_grad_enabled() and self.cell == "gru" and x.device.type == "cpu" and self.gru_scan

    def scan_rows(self, x: Tensor, rows: PackedRows) -> Tensor:
        """Both directions over packed input rows ``x (total, d)`` in forward order
        (``x[k]`` is the item at ``rows.fwd_pos[k]``) -> ``(total, 2*hidden)`` in the same
        order: the layout a caller keeps when it never pads (the word-level encoder)."""
        return torch.cat(self.scan_projected(self.project_rows(x, rows), rows), dim=-1)

    def project_rows(self, x: Tensor, rows: PackedRows, start: int = 0, bias: bool = True) -> Tensor:
        """Both directions' input projections of packed rows ``x (total, k)``, each in its own
        reading order: ``(2, total, 3*hidden)`` = ``W_ih[:, start:start + k] x (+ b_ih)``, in
        one batched product.  An input ``[a; b]`` whose part ``a`` is the same over several
        calls (the EC-Encoder's u over its T passes) is projected as ``W_a a + b_ih`` once
        plus ``W_b b`` per call: the same linear map, ``W_ih [a; b] = W_a a + W_b b``."""
        f, b = self.fwd, self.bwd
        cols = slice(start, start + x.size(-1))
        xs = torch.stack([x, x[rows.bwd_rows]])
        w = torch.stack([f.weight_ih_l0[:, cols], b.weight_ih_l0[:, cols]]).transpose(1, 2)
        if not bias:
            return torch.bmm(xs, w)
        return torch.baddbmm(torch.stack([f.bias_ih_l0, b.bias_ih_l0])[:, None, :], xs, w)

    def recurrent_weights(self) -> tuple[Tensor, Tensor]:
        """``W_hh (2, 3H, H)`` and ``b_hh (2, 3H)`` of both directions, stacked for
        :meth:`scan_projected` (a caller scanning several times per step stacks them once)."""
        f, b = self.fwd, self.bwd
        return torch.stack([f.weight_hh_l0, b.weight_hh_l0]), torch.stack([f.bias_hh_l0, b.bias_hh_l0])

    def scan_projected(self, gi: Tensor, rows: PackedRows,
                       recurrent: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """The recurrence from ready input projections ``gi`` (:meth:`project_rows`) ->
        the forward and the backward states ``(total, hidden)`` each, both in forward order."""
        w_hh, b_hh = recurrent if recurrent is not None else self.recurrent_weights()
        states = _BiGRUScan.apply(gi, w_hh, b_hh, rows.batch_sizes)
        return states[0], states[1][rows.fwd_rows]

    def _forward_scan(self, x: Tensor, lengths: Tensor) -> Tensor:
        batch, width, dim = x.shape
        rows = packed_rows(lengths, width)
        h = self.scan_rows(x.reshape(batch * width, dim)[rows.fwd_pos], rows)
        out = x.new_zeros(batch * width, 2 * self.hidden_size).index_copy(0, rows.fwd_pos, h)
        return out.view(batch, width, 2 * self.hidden_size)

    def _forward_groups(self, x: Tensor, lengths: Tensor) -> Tensor:
        batch, width, _ = x.shape
        order = torch.argsort(lengths, stable=True)
        sorted_lengths = lengths[order].tolist()
        pieces = []
        for start, end in length_groups(sorted_lengths, STEP_COST):
            chunk = order[start:end]
            lens = lengths[chunk]
            max_len = sorted_lengths[end - 1]
            xs = x[chunk, :max_len]
            real = length_mask(lens, max_len)
            rev = reverse_within_lengths(lens, max_len)
            rev_x = rev[..., None].expand(-1, -1, xs.size(-1))
            out_f, _ = self.fwd(xs)
            out_b, _ = self.bwd(xs.gather(1, rev_x))
            out_b = out_b.gather(1, rev[..., None].expand(-1, -1, self.hidden_size))
            out = torch.cat([out_f, out_b], dim=-1) * real[..., None]
            pieces.append(F.pad(out, (0, 0, 0, width - max_len)))
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(batch, device=order.device)
        return torch.cat(pieces, dim=0)[inverse]

    def _forward_packed(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Inference path: one packed bidirectional RNN call sharing ``fwd``/``bwd``'s
        weights; packing skips padding entirely, which is faster when no backward pass is
        needed (same function, equal up to float rounding)."""
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(self._bidirectional()(packed)[0], batch_first=True, total_length=x.size(1))[0]

    def _bidirectional(self) -> nn.RNNBase:
        """A bidirectional RNN whose parameters *are* ``fwd``'s and ``bwd``'s (shared, not
        copied, so loading weights updates it too).  Built once, on the meta device so that
        its own initialisation neither computes nor draws from the global RNG, and kept
        outside ``_modules`` so it adds nothing to the state dict."""
        bi = self.__dict__.get("_bi")
        if bi is None:
            bi = RNN_CELLS[self.cell](self.fwd.input_size, self.hidden_size, batch_first=True,
                                      bidirectional=True, device="meta")
            for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                setattr(bi, name, getattr(self.fwd, name))
                setattr(bi, name + "_reverse", getattr(self.bwd, name))
            self.__dict__["_bi"] = bi
        return bi


class ForwardRNN(nn.Module):
    """Forward-only single-layer GRU or LSTM over right-padded sequences: the causal
    counterpart of :class:`BiRNN` (the state at position t reads positions 1..t only).

    Right padding comes after a sequence's real items, so one ``nn.GRU``/``nn.LSTM`` call
    over the padded batch leaves real positions untouched by it; outputs at padded positions
    are zeroed.  :meth:`step` advances one position from a carried state with the same
    module, for incremental (streaming) inference."""

    def __init__(self, input_size: int, hidden_size: int, cell: str = "gru") -> None:
        super().__init__()
        self.cell = cell
        self.hidden_size = hidden_size
        self.rnn = rnn_class(cell)(input_size, hidden_size, batch_first=True)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``x (B, L, d)``, ``lengths (B,)`` -> ``(B, L, hidden)``, zero at padding."""
        out, _ = self.rnn(x)
        return out * length_mask(lengths.to(x.device), x.size(1))[..., None].to(out.dtype)

    def step(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """One position: ``x (B, d)`` and the state after the previous one (None at the
        start) -> the output ``(B, hidden)`` and the new state."""
        out, state = self.rnn(x[:, None], state)
        return out[:, 0], state


def causal_mask(n: int, device: torch.device | None = None) -> Tensor:
    """``(n, n)`` boolean, True where query i may read key j (j <= i): the attention mask of
    a causal model, which must not look at later utterances."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def use_gru_scan(module: nn.Module, on: bool) -> None:
    """Whether every :class:`BiRNN` inside ``module`` trains its GRU with the packed scan (the
    default) or with ``nn.GRU`` over length groups: the same function, two speeds."""
    for m in module.modules():
        if isinstance(m, BiRNN):
            m.gru_scan = on


class BiGRU(BiRNN):
    """:class:`BiRNN` with GRU cells (the paper's eq. 1 and eq. 5-6)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, cell="gru")


def gru_cell(x: Tensor, h: Tensor, gru: nn.GRU) -> Tensor:
    """One step of a single-layer unidirectional ``nn.GRU``, sharing its weights.

    Used by the Gold Label ablation, which must recompute each position's output with its
    own gold label hidden while reusing the context states of its neighbours.
    """
    return gru_update(F.linear(x, gru.weight_ih_l0, gru.bias_ih_l0), F.linear(h, gru.weight_hh_l0, gru.bias_hh_l0), h)


def scatter_utterances(flat: Tensor, dialog_lengths: Tensor) -> Tensor:
    """Turn ``(total_utterances, d)`` (dialogue-major order) into ``(batch, max_n, d)``.

    Padded utterance slots are zeros; they are never read by the packed context RNN.
    """
    batch, max_n = dialog_lengths.numel(), int(dialog_lengths.max())
    mask = length_mask(dialog_lengths, max_n)
    out = flat.new_zeros(batch, max_n, flat.size(-1))
    out[mask] = flat
    return out


def reverse_within_lengths(lengths: Tensor, max_len: int) -> Tensor:
    """``(batch, max_len)`` positions that reverse each row within its own length and leave
    its padding in place: ``x.gather(1, idx)`` reads a right-padded sequence backwards with
    the padding still after the real items.  Applying it twice is the identity, so the same
    index also puts a backward pass's outputs back in reading order.  Used by the backward
    direction of DialogueRNN."""
    pos = torch.arange(max_len, device=lengths.device)[None, :]
    return torch.where(pos < lengths[:, None], lengths[:, None] - 1 - pos, pos)


def gru_update(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    """The GRU state update from ready gate projections ``gi = W_ih x + b_ih`` and
    ``gh = W_hh h + b_hh`` (PyTorch's gate order r, z, n): the caller may project all of a
    sequence's inputs at once outside its time loop, or add projections of several input
    parts.  Same function as ``nn.GRUCell`` (equal up to float rounding).  Used by
    DialogueRNN's recurrence and :func:`gru_cell`."""
    hidden = h.size(-1)
    i_rz, i_n = gi.split([2 * hidden, hidden], dim=-1)
    h_rz, h_n = gh.split([2 * hidden, hidden], dim=-1)
    r, z = torch.sigmoid(i_rz + h_rz).chunk(2, dim=-1)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h
