"""DialogueGCN (Ghosal et al., EMNLP 2019): graph construction, layers and the model contract."""
from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.nn import RGCNConv

from iein.data.batching import Batch, collate, encode_with
from iein.data.conversation import Conversation, Utterance
from iein.encoders.glove import WordFeaturizer
from iein.encoders.glove_bigru import GloveBiGRU, GloveBiGRUConfig
from iein.errors import ConfigError, DataError
from iein.models.dialoguegcn import DialogueGCN, DialogueGCNConfig, EdgeWeightedRGCNConv, NodalAttention, build_edges
from iein.text.vocab import Vocab
from tests.conftest import overfit_losses

torch.set_num_threads(1)

LABELS = {"x": 0, "y": 1, "z": 2}

# The hand-built dialogue: speakers A B A A B -> parties 0 1 0 0 1.
SPEAKERS_5 = [0, 1, 0, 0, 1]
# relation id = (party of source * 2 + party of target) * 2 + (source not before target):
#   0 A->A past, 1 A->A self/future, 2 A->B past, 3 A->B future,
#   4 B->A past, 5 B->A future,      6 B->B past, 7 B->B self/future.
# (source j, target i, relation), ordered by target then source.
EXPECTED_PAST2_FUTURE1 = [
    (0, 0, 1), (1, 0, 5),
    (0, 1, 2), (1, 1, 7), (2, 1, 3),
    (0, 2, 0), (1, 2, 4), (2, 2, 1), (3, 2, 1),
    (1, 3, 4), (2, 3, 0), (3, 3, 1), (4, 3, 5),
    (2, 4, 2), (3, 4, 2), (4, 4, 7),
]
EXPECTED_DEFAULT_WINDOW = [  # window 10/10 covers the whole 5-utterance dialogue
    (0, 0, 1), (1, 0, 5), (2, 0, 1), (3, 0, 1), (4, 0, 5),
    (0, 1, 2), (1, 1, 7), (2, 1, 3), (3, 1, 3), (4, 1, 7),
    (0, 2, 0), (1, 2, 4), (2, 2, 1), (3, 2, 1), (4, 2, 5),
    (0, 3, 0), (1, 3, 4), (2, 3, 0), (3, 3, 1), (4, 3, 5),
    (0, 4, 2), (1, 4, 6), (2, 4, 2), (3, 4, 2), (4, 4, 7),
]


def edges_of(graph) -> list[tuple[int, int, int]]:
    src, dst = graph.edge_index.tolist()
    return list(zip(src, dst, graph.edge_type.tolist()))


# -- graph construction


def test_edges_of_hand_built_dialogue_small_window():
    graph = build_edges(torch.tensor([5]), torch.tensor([SPEAKERS_5]), window_past=2, window_future=1, n_parties=2)
    assert edges_of(graph) == EXPECTED_PAST2_FUTURE1
    assert graph.n_nodes == 5


def test_edges_of_hand_built_dialogue_default_window():
    graph = build_edges(torch.tensor([5]), torch.tensor([SPEAKERS_5]), n_parties=2)
    assert edges_of(graph) == EXPECTED_DEFAULT_WINDOW


def test_batch_is_one_disjoint_graph_without_padding_nodes():
    # second dialogue (parties 0 0) is padded to width 5; its nodes are 5 and 6
    speakers = torch.tensor([SPEAKERS_5, [0, 0, -1, -1, -1]])
    graph = build_edges(torch.tensor([5, 2]), speakers, window_past=2, window_future=1, n_parties=2)
    edges = edges_of(graph)
    assert edges[:16] == EXPECTED_PAST2_FUTURE1
    assert edges[16:] == [(5, 5, 1), (6, 5, 1), (5, 6, 0), (6, 6, 1)]
    assert graph.n_nodes == 7


def test_relations_with_more_parties_use_2_m_squared_ids():
    # three parties: relation (2 -> 1, past) = (2*3 + 1)*2 + 0 = 14; (1 -> 2, future) = (1*3+2)*2+1 = 11
    graph = build_edges(torch.tensor([2]), torch.tensor([[2, 1]]), window_past=1, window_future=1, n_parties=3)
    assert edges_of(graph) == [(0, 0, 17), (1, 0, 11), (0, 1, 14), (1, 1, 9)]
    assert int(graph.edge_type.max()) < 2 * 3 ** 2


def test_too_many_parties_is_a_data_error():
    with pytest.raises(DataError, match="max_parties"):
        build_edges(torch.tensor([3]), torch.tensor([[0, 1, 2]]), n_parties=2)
    with pytest.raises(DataError, match="party"):
        build_edges(torch.tensor([2]), torch.tensor([[0, -1]]), n_parties=2)


# -- the relational layer


@pytest.mark.parametrize("num_bases,per_source", [(3, None), (3, 4), (None, None)])
def test_rgcn_with_unit_weights_equals_pyg_rgcnconv(num_bases, per_source):
    torch.manual_seed(0)
    graph = build_edges(torch.tensor([5, 3]), torch.tensor([SPEAKERS_5, [1, 0, 0, -1, -1]]),
                        window_past=2, window_future=1, n_parties=2)
    ours = EdgeWeightedRGCNConv(6, 4, 8, num_bases, relations_per_source=per_source)
    ref = RGCNConv(6, 4, 8, num_bases=num_bases, aggr="mean")
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(graph.n_nodes, 6)
    torch.testing.assert_close(ours(x, graph.edge_index, graph.edge_type), ref(x, graph.edge_index, graph.edge_type))


def test_rgcn_edge_weights_follow_eq2():
    # eq. 2 computed edge by edge: sum over edges of alpha / c_{i,r} * W_r x_j, plus root and bias
    torch.manual_seed(1)
    graph = build_edges(torch.tensor([5]), torch.tensor([SPEAKERS_5]), window_past=2, window_future=1, n_parties=2)
    conv = EdgeWeightedRGCNConv(6, 4, 8, num_bases=3, relations_per_source=4)  # as in DialogueGCN, M = 2
    x = torch.randn(5, 6)
    alpha = torch.rand(graph.edge_index.size(1))
    w = torch.einsum("rb,bio->rio", conv.comp, conv.weight)
    expected = x @ conv.root + conv.bias
    edges = edges_of(graph)
    for e, (j, i, r) in enumerate(edges):
        c = sum(1 for (_, i2, r2) in edges if i2 == i and r2 == r)
        expected = expected.index_add(0, torch.tensor([i]), (alpha[e] / c * x[j] @ w[r])[None])
    torch.testing.assert_close(conv(x, graph.edge_index, graph.edge_type, alpha), expected)


def test_edge_weights_are_eq1_softmax_over_what_each_utterance_reads():
    model = make_model(hidden=3)
    graph = build_edges(torch.tensor([5]), torch.tensor([SPEAKERS_5]), window_past=2, window_future=1, n_parties=2)
    g = torch.randn(5, 6)
    alpha = model.edge_weights(g, graph)
    w_e = model.edge_attention.weight
    for i in range(5):
        sources = [j for (j, i2, _) in EXPECTED_PAST2_FUTURE1 if i2 == i]
        expected = torch.softmax(torch.stack([g[i] @ w_e.T @ g[j] for j in sources]), dim=0)
        torch.testing.assert_close(alpha[graph.edge_index[1] == i], expected)


# -- the model


VOCAB = Vocab(["<pad>", "<unk>"] + [f"w{i}" for i in range(20)])
FEAT = WordFeaturizer(VOCAB)


def make_model(**kw) -> DialogueGCN:
    torch.manual_seed(0)
    enc = GloveBiGRU(GloveBiGRUConfig(vocab_size=len(VOCAB), embedding_dim=8, hidden=4), FEAT)
    cfg = dict(n_labels=3, hidden=5, graph_hidden=6, classifier_hidden=7, max_parties=3, num_bases=4, dropout=0.0)
    cfg.update(kw)
    return DialogueGCN(DialogueGCNConfig(**cfg), enc)


def conversation(name: str, turns: list[tuple[str, str, str]]) -> Conversation:
    return Conversation(name, [Utterance(s, text, label) for s, text, label in turns])


SHORT = conversation("short", [("A", "w1 w2", "x"), ("B", "w3", "y"), ("A", "w4 w5 w6", "z")])
LONG = conversation("long", [("A", "w7", "y"), ("B", "w8 w9", "x"), ("C", "w10", "z"), ("A", "w11 w2", "x"),
                             ("B", "w12", "y"), ("C", "w13 w14", "x"), ("A", "w15", "z")])


def batch_of(model: DialogueGCN, convs: list[Conversation]) -> Batch:
    items = [encode_with(c, FEAT.featurize(c), LABELS) for c in convs]
    return collate(items, model.utterance_encoder.collate)


def test_output_shapes_and_contract():
    model = make_model()
    batch = batch_of(model, [SHORT, LONG])
    out = model(batch)
    assert len(out.steps) == model.n_steps == 1
    assert out.steps[0].shape == (2, 7, 3)
    assert out.loss is not None and out.loss.ndim == 0
    assert model.decode(out.steps, batch).shape == (2, 1, 7)
    assert model.step_probs(out.steps, batch).shape == (2, 1, 7, 3)
    assert not model.is_oracle


@pytest.mark.parametrize("kw", [dict(nodal_attention=False), dict(num_bases=None), dict(window_past=0, window_future=0)])
def test_variants_run(kw):
    model = make_model(**kw)
    out = model(batch_of(model, [SHORT, LONG]))
    assert out.steps[0].shape == (2, 7, 3) and torch.isfinite(out.loss)


def test_padding_rows_of_u_never_change_real_outputs():
    model = make_model()
    model.eval()
    batch = batch_of(model, [LONG, SHORT])  # SHORT is padded from 3 to 7 utterances
    u = torch.randn(2, 7, model.utterance_encoder.output_dim)
    u[1, 3:] = 0.0
    noisy = u.clone()
    noisy[1, 3:] = torch.randn(4, model.utterance_encoder.output_dim) * 100
    with torch.no_grad():
        a = model.context(u, batch)[0]
        b = model.context(noisy, batch)[0]
    mask = batch.mask
    assert torch.equal(a[mask], b[mask])


def test_dialogue_alone_equals_dialogue_batched_with_a_longer_one():
    model = make_model()
    model.eval()
    with torch.no_grad():
        alone = model(batch_of(model, [SHORT])).steps[0][0]
        together = model(batch_of(model, [LONG, SHORT])).steps[0][1, :3]
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-6)


def test_speakers_matter():
    # the same words with other speakers give other outputs: the relations are used
    model = make_model()
    model.eval()
    same = conversation("same", [("A", t.text, t.label) for t in SHORT.utterances])
    with torch.no_grad():
        a = model(batch_of(model, [SHORT])).steps[0]
        b = model(batch_of(model, [same])).steps[0]
    assert not torch.allclose(a, b)


def test_loss_falls_when_overfitting_two_dialogues():
    # Without eq. 5-6: at initialisation the nodal attention is close to uniform (scores near
    # 0), so every utterance starts from about its dialogue's mean and 30 steps are too few
    # for the tiny model to become selective (see the module docstring of dialoguegcn.py).
    model = make_model(dropout=0.1, nodal_attention=False)
    batch = batch_of(model, [SHORT, LONG])
    losses = overfit_losses(model.parameters(), lambda: model(batch).loss, lr=0.02)
    assert losses[-1] < 0.5 * losses[0]


def test_nodal_attention_hand_computed():
    att = NodalAttention(2)
    with torch.no_grad():
        att.w_beta.weight.copy_(torch.eye(2))
    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])  # third utterance is padding
    mask = torch.tensor([[True, True, False]])
    e = math.e
    # query 0: scores (1, 0) -> beta = (e, 1)/(e+1); query 1: scores (0, 1)
    expected = torch.tensor([[[e / (e + 1), 1 / (e + 1)], [1 / (e + 1), e / (e + 1)]]])
    torch.testing.assert_close(att(h, mask)[:, :2], expected)


def test_every_parameter_gets_a_gradient():
    model = make_model()
    model(batch_of(model, [SHORT, LONG])).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_model_rejects_dialogue_with_more_parties_than_configured():
    model = make_model(max_parties=2)
    with pytest.raises(DataError, match="max_parties"):
        model(batch_of(model, [LONG]))  # three parties


@pytest.mark.parametrize("field,value", [
    ("max_parties", 0), ("window_past", -1), ("window_future", -2), ("num_bases", 0),
    ("dropout", 1.0), ("n_labels", 1), ("hidden", 0),
])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=field):
        DialogueGCNConfig(**{field: value})


def test_config_relations_and_unknown_field():
    assert DialogueGCNConfig(max_parties=2).n_relations == 8  # IEMOCAP: Table 1's 8 relations
    assert DialogueGCNConfig().n_relations == 162  # MELD: 9 parties
    with pytest.raises(ConfigError, match="unknown fields"):
        DialogueGCNConfig.from_dict({"window": 3})
