"""DialogueGCN (Ghosal et al., EMNLP 2019), section 3 of the paper, on PyTorch Geometric.

Reading order follows the paper (section 3.3):

* 3.3.1 sequential context encoder   g_i = BiGRU(u_i), a :class:`~iein.layers.BiGRU`
* 3.3.2 speaker-level context encoder a directed graph per dialogue, built for the whole
  batch at once by :func:`build_edges`: every utterance reads its ``window_past`` previous
  and ``window_future`` next utterances and itself; the edge weights alpha_ij are an
  attention (eq. 1); the relation of an edge is (speaker of the source, speaker of the
  target, whether the source comes before the target): 2*M^2 relations for M parties
  (Table 1 of the paper).  Two layers: a relational GCN (eq. 2, PyG ``RGCNConv`` with basis
  decomposition, :class:`EdgeWeightedRGCNConv`) and a GCN (eq. 3, PyG ``GraphConv``);
* 3.3.3 emotion classifier            h_i = [g_i; h_i^(2)] (eq. 4), attention over the
  dialogue (eq. 5-6), ReLU layer (eq. 7), softmax (eq. 8; taken in the loss).

Where the authors' code (declare-lab/conv-emotion, ``DialogueGCN/model.py``) differs from
the paper, this file follows the paper:

* eq. 1: the paper scores an edge with the content of both ends, g_i^T W_e g_j; the code
  (``MaskedEdgeAttention``, 'attn1') learns one vector per *position* i (a
  ``Linear(2*D_e, max_seq_len)``), scoring w_i . g_j, which also fixes a maximum
  dialogue length in advance.  We use the bilinear form and need no maximum length;
* eq. 1-2: the paper normalises alpha_ij over the neighbourhood that node i aggregates;
  the code normalises over the *source's* window (and, when p != f, swaps the past and
  future windows of the aggregating node).  We follow the paper;
* eq. 2: the paper divides by c_{i,r} = |N_i^r| (PyG's current ``RGCNConv`` default
  ``aggr="mean"``); the code used PyG 1.x's ``RGCNConv`` with ``edge_norm`` and sum
  aggregation, i.e. no 1/c_{i,r}.  We follow the paper;
* eq. 2-3: the paper applies sigma (ReLU here) after each graph layer; the code applies
  none.  We follow the paper;
* eq. 5-6: the paper's attention is softmax_j(h_i^T W_beta h_j); the code's
  (``MatchingAttention`` 'general2') adds a bias and a tanh on the scores, and is off unless
  ``--nodal-attention`` is given.  We follow the paper, on by default (``nodal_attention``);
* the sequential encoder is the paper's single-layer bidirectional GRU (the code's default
  is a two-layer bidirectional LSTM).

``causal=true`` (for live use; not in the paper): the sequential encoder is a forward GRU
(g_i has ``hidden`` dims), every utterance reads its past window only (``window_future`` is
taken as 0) and eq. 5-6 attend to utterances j <= i only.

As in the code (the paper's eq. 2 writes the self term separately as alpha_ii W_0 g_i),
the self-loop is an ordinary relational edge (relation "same speaker, source not before
the target") weighted by alpha_ii, and ``RGCNConv``'s root weight and bias add W_0 g_i + b.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GraphConv, RGCNConv
from torch_geometric.utils import scatter, softmax

from ..data.batching import Batch
from ..encoders.base import UtteranceEncoder
from ..errors import ConfigError, DataError
from ..layers import BiGRU, ForwardRNN, causal_mask, length_mask
from .base import ConversationModel, ModelConfig


@dataclasses.dataclass
class DialogueGCNConfig(ModelConfig):
    """Hyper-parameters; defaults are the authors' (``DialogueGCN/train_IEMOCAP.py``:
    D_e = 100, graph_h = 100, window 10/10, 30 bases, dropout 0.5).  The paper publishes no
    MELD script; MELD dialogues have up to 9 parties (IEMOCAP: 2)."""

    section: ClassVar[str] = "model dialoguegcn"
    dropout: float = 0.5  # on the utterance vectors and before the softmax layer
    hidden: int = 100  # GRU size per direction: g_i has 2*hidden dims (D_e)
    graph_hidden: int = 100  # size of h^(1) and h^(2) (graph_h)
    classifier_hidden: int = 100  # size of l_i, eq. 7
    window_past: int = 10  # p: past utterances each utterance reads (paper: 10)
    window_future: int = 10  # f: future utterances each utterance reads (paper: 10)
    max_parties: int = 9  # M: parties per dialogue the relations cover (MELD 9, IEMOCAP 2)
    num_bases: int | None = 30  # basis decomposition of the 2*M^2 relation weights (None: full)
    nodal_attention: bool = True  # eq. 5-6 attention over the dialogue before classifying

    def __post_init__(self) -> None:
        if self.n_labels < 2:
            raise ConfigError("model config field 'n_labels': need at least 2 labels")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("model config field 'dropout' must be in [0, 1)")
        for name in ("hidden", "graph_hidden", "classifier_hidden", "max_parties"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model config field {name!r} must be >= 1")
        for name in ("window_past", "window_future"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model config field {name!r} must be >= 0")
        if self.num_bases is not None and self.num_bases < 1:
            raise ConfigError("model config field 'num_bases' must be >= 1 (or null for full relation weights)")

    @property
    def n_relations(self) -> int:
        """2*M^2: (speaker of source, speaker of target) x (source before target or not)."""
        return 2 * self.max_parties ** 2


# -- section 3.3.2: the graph


class DialogueGraph(NamedTuple):
    """One disjoint graph for a whole batch.  Nodes are the real utterances in
    dialogue-major order (``u[batch.mask]``); padding is never a node."""

    edge_index: Tensor  # (2, E): row 0 the source j, row 1 the target i that reads it
    edge_type: Tensor  # (E,) relation id, see :func:`relation_id`
    n_nodes: int


def relation_id(source_party: Tensor, target_party: Tensor, source_not_before: Tensor, n_parties: int) -> Tensor:
    """Relation of an edge j -> i (Table 1): ``(p_j * M + p_i) * 2 + [j >= i]``, the layout of
    the authors' ``edge_type_mapping`` (a self-loop counts as "not before")."""
    return (source_party * n_parties + target_party) * 2 + source_not_before.long()


def build_edges(n_utts: Tensor, speakers: Tensor, window_past: int = 10, window_future: int = 10,
                *, n_parties: int) -> DialogueGraph:
    """Edges of every dialogue of a batch, vectorised (no loop over dialogues or edges).

    Utterance i of a dialogue reads (is the target of edges from) utterances
    j = i - window_past ... i + window_future of the same dialogue, itself included
    (section 3.3.2, "Edges").  ``speakers (B, N)`` holds each utterance's party index within
    its dialogue (-1 at padding), ``n_utts (B,)`` the dialogue lengths.  Edges are ordered
    by dialogue, then target, then source.
    """
    if window_past < 0 or window_future < 0:
        raise ConfigError("model config fields 'window_past'/'window_future' must be >= 0")
    batch, width = speakers.shape
    device = speakers.device
    mask = length_mask(n_utts, width)
    parties = speakers[mask]
    if parties.numel() and int(parties.min()) < 0:
        raise DataError("batch.speakers: a real utterance has no party index (-1 is for padding only)")
    if parties.numel() and int(parties.max()) >= n_parties:
        raise DataError(f"a dialogue has {int(parties.max()) + 1} parties but the model's relations cover "
                        f"{n_parties} (model config field 'max_parties'; MELD dialogues have up to 9)")
    # offsets of the sources relative to their target; the window never needs to exceed the batch
    offsets = torch.arange(-min(window_past, width - 1), min(window_future, width - 1) + 1, device=device)
    source = torch.arange(width, device=device)[:, None] + offsets  # (N, K)
    ok = mask[:, :, None] & (source >= 0) & (source < n_utts[:, None, None])  # (B, N, K)
    b, i, k = ok.nonzero(as_tuple=True)
    j = i + offsets[k]
    node = (mask.flatten().cumsum(0) - 1).view(batch, width)  # node id of each real utterance
    edge_index = torch.stack([node[b, j], node[b, i]])
    edge_type = relation_id(speakers[b, j], speakers[b, i], j >= i, n_parties)
    return DialogueGraph(edge_index, edge_type, int(mask.sum()))


class EdgeWeightedRGCNConv(RGCNConv):
    """Eq. 2: h_i = sum_r sum_{j in N_i^r} alpha_ij / c_{i,r} W_r g_j + W_0 g_i + b.

    PyG's ``RGCNConv`` (its parameters, initialisation and basis decomposition
    W_r = sum_b a_rb V_b) with per-edge weights: PyG >= 2 dropped the ``edge_norm``
    argument the authors used, and its loop over relations would run 2*M^2 = 162 times per
    layer for MELD.  Here every message W_r x_j is computed without a loop: x_j V_b for
    every basis b once per node, then for each node the combinations a_r. of the
    ``relations_per_source`` relations it can send along (a node's out-edges must all fall
    in one block ``edge_type // relations_per_source``: in DialogueGCN the 2M relations
    whose source is its speaker; the default, all relations, holds for any graph).  The
    weighted messages are summed per target.  With all weights 1 this is exactly
    ``RGCNConv.forward`` (``aggr="mean"``), which the tests check.
    """

    def __init__(self, in_channels: int, out_channels: int, num_relations: int, num_bases: int | None,
                 relations_per_source: int | None = None) -> None:
        super().__init__(in_channels, out_channels, num_relations, num_bases=num_bases, aggr="mean")
        self.block = relations_per_source or num_relations
        if num_relations % self.block:
            raise ConfigError(f"relations_per_source={self.block} does not divide {num_relations} relations")
        if num_bases is None and self.block != num_relations:
            raise ConfigError("relations_per_source needs num_bases (the basis decomposition)")

    def forward(self, x: Tensor, edge_index: Tensor, edge_type: Tensor,  # type: ignore[override]
                edge_weight: Tensor | None = None) -> Tensor:
        source, target = edge_index
        n = x.size(0)
        # 1/c_{i,r}: c_{i,r} = |N_i^r|, the neighbours of i under the edge's relation
        _, group, count = torch.unique(target * self.num_relations + edge_type, return_inverse=True,
                                       return_counts=True)
        coef = 1.0 / count[group].to(x.dtype)
        if edge_weight is not None:
            coef = coef * edge_weight
        if self.num_bases is not None:
            xv = torch.einsum("ni,bio->nbo", x, self.weight)  # x_j V_b for every basis b
            block_of_node = torch.zeros(n, dtype=torch.long, device=x.device)
            block_of_node[source] = edge_type // self.block
            comp = self.comp.view(-1, self.block, self.num_bases)[block_of_node]  # (n, block, bases)
            messages = torch.bmm(comp, xv)  # (n, block, out): W_r x_j for the relations of j's block
        else:
            messages = torch.einsum("ni,rio->nro", x, self.weight)  # every relation (few of them)
        y = messages[source, edge_type % self.block]
        out = scatter(coef[:, None] * y, target, dim=0, dim_size=n, reduce="sum")
        if self.root is not None:
            out = out + x @ self.root
        if self.bias is not None:
            out = out + self.bias
        return out


# -- section 3.3.3: the classifier's attention


class NodalAttention(nn.Module):
    """Eq. 5-6: beta_i = softmax_j(h_i^T W_beta h_j) over the dialogue's real utterances,
    h~_i = sum_j beta_ij h_j."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w_beta = nn.Linear(dim, dim, bias=False)

    def forward(self, h: Tensor, mask: Tensor, causal: bool = False) -> Tensor:
        scores = self.w_beta(h) @ h.transpose(1, 2)  # (B, N, N): query i, key j
        keys = mask[:, None, :] & causal_mask(h.size(1), h.device) if causal else mask[:, None, :]
        beta = torch.softmax(scores.masked_fill(~keys, float("-inf")), dim=-1)
        return beta @ h


class DialogueGCN(ConversationModel):
    """Sequential encoder -> speaker-level graph encoder -> classifier; one step of logits."""

    model_type = "dialoguegcn"
    config_class = DialogueGCNConfig
    reference = "Ghosal et al. (EMNLP 2019), DialogueGCN: a graph convolutional network for ERC"
    config: DialogueGCNConfig

    def __init__(self, cfg: DialogueGCNConfig, encoder: UtteranceEncoder) -> None:
        super().__init__(cfg, encoder)
        dg = cfg.hidden * (1 if cfg.causal else 2)
        self.sequential = (ForwardRNN if cfg.causal else BiGRU)(encoder.output_dim, cfg.hidden)  # section 3.3.1
        self.edge_attention = nn.Linear(dg, dg, bias=False)  # W_e of eq. 1
        # eq. 2; relation_id puts the 2M relations of one source speaker next to each other
        self.rgcn = EdgeWeightedRGCNConv(dg, cfg.graph_hidden, cfg.n_relations, cfg.num_bases,
                                         relations_per_source=2 * cfg.max_parties if cfg.num_bases else None)
        self.gcn = GraphConv(cfg.graph_hidden, cfg.graph_hidden, aggr="add")  # eq. 3
        dh = dg + cfg.graph_hidden
        self.nodal_attention = NodalAttention(dh) if cfg.nodal_attention else None  # eq. 5-6
        self.hidden_layer = nn.Linear(dh, cfg.classifier_hidden)  # W_l, eq. 7
        self.classifier = nn.Linear(cfg.classifier_hidden, cfg.n_labels)  # W_smax, eq. 8

    def graph(self, batch: Batch) -> DialogueGraph:
        cfg = self.config
        return build_edges(batch.n_utts, batch.speakers, cfg.window_past, 0 if cfg.causal else cfg.window_future,
                           n_parties=cfg.max_parties)

    def edge_weights(self, g: Tensor, graph: DialogueGraph) -> Tensor:
        """Eq. 1: alpha_ij = softmax over the sources j that i reads of g_i^T W_e g_j."""
        source, target = graph.edge_index
        scores = (self.edge_attention(g)[target] * g[source]).sum(-1)
        return softmax(scores, target, num_nodes=graph.n_nodes)

    def speaker_level(self, g: Tensor, graph: DialogueGraph) -> Tensor:
        """Eq. 1-3 on the node features ``g (n_nodes, 2*hidden)`` -> h^(2)."""
        alpha = self.edge_weights(g, graph)
        h1 = F.relu(self.rgcn(g, graph.edge_index, graph.edge_type, alpha))  # eq. 2
        return F.relu(self.gcn(h1, graph.edge_index))  # eq. 3

    def context(self, u: Tensor, batch: Batch) -> list[Tensor]:
        cfg = self.config
        mask = length_mask(batch.n_utts, u.size(1))
        g = self.sequential(u, batch.n_utts)  # (B, N, 2*hidden); zero at padding
        h2 = self.speaker_level(g[mask], self.graph(batch))
        graph_out = h2.new_zeros(*mask.shape, h2.size(-1))
        graph_out[mask] = h2  # back to (B, N, graph_hidden), zero at padding
        h = torch.cat([g, graph_out], dim=-1)  # eq. 4
        if self.nodal_attention is not None:
            h = self.nodal_attention(h, mask, cfg.causal)  # eq. 5-6
        hidden = self.dropout(F.relu(self.hidden_layer(h)))  # eq. 7
        return [self.classifier(hidden)]  # eq. 8 (softmax in the loss / step_probs)
