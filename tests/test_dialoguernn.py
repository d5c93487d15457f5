"""DialogueRNN (Majumder et al., AAAI 2019): the batched model against a per-dialogue,
per-utterance reading of the paper's equations, plus its padding and party-state contracts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from iein.data.batching import IGNORE, Batch, collate, encode_with
from iein.data.conversation import Conversation, Utterance
from iein.encoders.glove import WordFeaturizer
from iein.encoders.glove_bigru import GloveBiGRU, GloveBiGRUConfig
from iein.errors import ConfigError
from iein.layers import gru_update, reverse_within_lengths
from iein.models.dialoguernn import DialogueRNN, DialogueRNNConfig, DialogueRNNLayer
from iein.text.vocab import Vocab
from tests.conftest import overfit_losses

D_U = 8  # utterance vector size of the tiny encoder (2 x hidden 4)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_encoder() -> GloveBiGRU:
    vocab = Vocab(["<pad>", "<unk>"] + [f"w{i}" for i in range(20)])
    return GloveBiGRU(GloveBiGRUConfig(vocab_size=len(vocab), embedding_dim=8, hidden=4), WordFeaturizer(vocab))


def tiny_model(seed: int = 0, **kw) -> DialogueRNN:
    torch.manual_seed(seed)
    base = dict(n_labels=3, global_dim=6, party_dim=5, emotion_dim=4, hidden_dim=3,
                dropout=0.0, rec_dropout=0.0, emotion_dropout=0.0)
    base.update(kw)
    return DialogueRNN(DialogueRNNConfig(**base), tiny_encoder())


def make_batch(speakers: list[list[int]], seed: int = 0) -> tuple[Tensor, Batch]:
    """Random utterance vectors for dialogues with the given party sequences (right-padded)."""
    g = torch.Generator().manual_seed(seed)
    n_utts = torch.tensor([len(s) for s in speakers])
    width = int(n_utts.max())
    spk = torch.full((len(speakers), width), -1)
    labels = torch.full((len(speakers), width), IGNORE)
    for i, s in enumerate(speakers):
        spk[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.randint(0, 3, (len(s),), generator=g)
    u = torch.randn(len(speakers), width, D_U, generator=g) * (spk >= 0)[..., None]
    return u, Batch(None, n_utts, spk, labels, list(range(len(speakers))))


# dialogues of different lengths and party counts (MELD has up to 9 parties); padding included
SPEAKERS = [[0, 1, 0, 2, 3, 1, 0], [0, 1, 0], [0], [0, 0, 1, 2, 1]]


# -- a direct reading of the paper, one dialogue and one utterance at a time


def reference_direction(layer: DialogueRNNLayer, u: Tensor, speakers: list[int]) -> Tensor:
    """Eq. 1-7 for one dialogue ``u (n, D_m)``, written as plainly as possible."""
    one = lambda v: v.unsqueeze(0)  # noqa: E731  GRUCell wants a batch dimension
    q = [torch.zeros(layer.party_dim) for _ in range(max(speakers) + 1)]
    g = torch.zeros(layer.g_cell.hidden_size)
    e = torch.zeros(layer.e_cell.hidden_size)
    history: list[Tensor] = []
    out = []
    for t, s in enumerate(speakers):
        g = layer.g_cell(one(torch.cat([u[t], q[s]])), one(g))[0]  # eq. 1
        if t == 0:
            c = torch.zeros_like(g)
        else:
            hist = torch.stack(history)  # (t, D_g)
            if layer.context_attention == "general":
                alpha = torch.softmax(hist @ layer.context_query(u[t]), dim=0)  # eq. 2
            else:
                alpha = torch.softmax(layer.context_score(hist).squeeze(-1), dim=0)
            c = alpha @ hist  # eq. 4
        history.append(g)
        new = layer.p_cell(one(torch.cat([u[t], c])), one(q[s]))[0]  # eq. 5
        if layer.l_cell is not None:  # DialogueRNN_l
            q = [layer.l_cell(one(torch.cat([u[t], new])), one(q[i]))[0] for i in range(len(q))]
        q[s] = new  # eq. 6: the other parties keep their state
        e = layer.e_cell(one(new), one(e))[0]  # eq. 7
        out.append(e)
    return torch.stack(out)


def reference_logits(model: DialogueRNN, u: Tensor, speakers: list[int]) -> Tensor:
    e = reference_direction(model.forward_rnn, u, speakers)
    if model.backward_rnn is not None:
        e_b = reference_direction(model.backward_rnn, u.flip(0), speakers[::-1]).flip(0)
        e = torch.cat([e, e_b], dim=-1)
    if model.emotion_attention is not None:  # eq. 12-13
        beta = torch.softmax(model.emotion_attention.transform(e) @ e.T, dim=-1)
        e = beta @ e
    return model.classifier(F.relu(model.hidden(e)))  # eq. 8-9


@pytest.mark.parametrize("kw", [
    {},  # BiDialogueRNN+Att, the default
    {"bidirectional": False, "attention": False},
    {"listener_state": True, "context_attention": "simple"},
])
def test_batched_model_matches_per_dialogue_reading_of_the_paper(kw):
    model = tiny_model(**kw).eval()
    u, batch = make_batch(SPEAKERS)
    with torch.no_grad():
        logits = model.context(u, batch)[0]
        for i, spk in enumerate(SPEAKERS):
            n = len(spk)
            expected = reference_logits(model, u[i, :n], spk)
            assert torch.allclose(logits[i, :n], expected, atol=1e-5), (kw, i)


def test_output_shapes():
    model = tiny_model()
    u, batch = make_batch(SPEAKERS)
    steps = model.context(u, batch)
    assert model.n_steps == len(steps) == 1
    assert steps[0].shape == (4, 7, 3)
    assert model.emotion_states(u, batch).shape == (4, 7, 2 * 4)
    assert tiny_model(bidirectional=False).emotion_states(u, batch).shape == (4, 7, 4)
    e, states = model.forward_rnn(u, batch.speakers, batch.n_utts, return_party_states=True)
    assert e.shape == (4, 7, 4) and states.shape == (4, 7, 4, 5)  # 4 parties: the batch's most


def test_forward_with_real_encoder_and_loss():
    vocab = Vocab(["<pad>", "<unk>"] + [f"w{i}" for i in range(20)])
    feat = WordFeaturizer(vocab)
    torch.manual_seed(0)
    enc = GloveBiGRU(GloveBiGRUConfig(vocab_size=len(vocab), embedding_dim=8, hidden=4), feat)
    model = DialogueRNN(DialogueRNNConfig(n_labels=2, global_dim=6, party_dim=5, emotion_dim=4, hidden_dim=3), enc)
    convs = [Conversation("a", [Utterance("A", "w1 w2", "x"), Utterance("B", "w3", "y"), Utterance("A", "w4", "x")]),
             Conversation("b", [Utterance("C", "w5 w6 w7", "y")])]
    batch = collate([encode_with(c, feat.featurize(c), {"x": 0, "y": 1}) for c in convs], enc.collate)
    out = model(batch)
    assert out.steps[0].shape == (2, 3, 2) and out.loss is not None and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.forward_rnn.p_cell.weight_ih.grad.abs().sum() > 0


def test_padding_never_changes_real_outputs():
    model = tiny_model(listener_state=True).eval()
    u, batch = make_batch(SPEAKERS)
    noisy = u.clone()
    pad = ~batch.mask
    noisy[pad] = torch.randn(int(pad.sum()), D_U) * 100
    with torch.no_grad():
        clean_out = model.context(u, batch)[0]
        noisy_out = model.context(noisy, batch)[0]
    assert torch.equal(clean_out[batch.mask], noisy_out[batch.mask])


def test_padding_gets_no_gradient_and_changes_nothing_in_training():
    model = tiny_model(dropout=0.2, rec_dropout=0.2, emotion_dropout=0.2).train()
    u, batch = make_batch(SPEAKERS)
    pad = ~batch.mask
    outs = []
    for scale in (0.0, 100.0):
        x = u.clone()
        x[pad] = torch.randn(int(pad.sum()), D_U) * scale
        x.requires_grad_(True)
        torch.manual_seed(7)  # the same dropout masks (they depend on shapes only)
        logits = model.context(x, batch)[0]
        logits[batch.mask].sum().backward()
        assert torch.equal(x.grad[pad], torch.zeros(int(pad.sum()), D_U))
        assert x.grad[batch.mask].abs().sum() > 0
        outs.append(logits[batch.mask].detach())
    assert torch.equal(outs[0], outs[1])


def test_listener_party_state_unchanged_while_others_speak():
    """Eq. 6: A speaks at t=0 and t=2, B at t=1: B's state is unchanged at t=2 and A's at
    t=1; B's state is still the initial zero at t=0."""
    layer = tiny_model().forward_rnn.eval()
    u, batch = make_batch([[0, 1, 0], [0, 1, 2, 0, 2]])  # a second, longer dialogue in the batch
    with torch.no_grad():
        _, q = layer(u, batch.speakers, batch.n_utts, return_party_states=True)
    a, b = 0, 1
    assert torch.equal(q[0, 0, b], torch.zeros(5))
    assert torch.equal(q[0, 2, b], q[0, 1, b])  # B listens at t=2
    assert torch.equal(q[0, 1, a], q[0, 0, a])  # A listens at t=1
    assert not torch.allclose(q[0, 1, b], q[0, 0, b])  # B spoke at t=1
    assert not torch.allclose(q[0, 2, a], q[0, 1, a])  # A spoke at t=2
    assert torch.equal(q[0, :3, 2], torch.zeros(3, 5))  # a party slot the dialogue does not have


def test_active_listener_updates_listeners():
    layer = tiny_model(listener_state=True).forward_rnn.eval()
    u, batch = make_batch([[0, 1, 0]])
    with torch.no_grad():
        _, q = layer(u, batch.speakers, batch.n_utts, return_party_states=True)
    assert not torch.allclose(q[0, 2, 1], q[0, 1, 1])  # DialogueRNN_l: B hears A at t=2


def test_a_dialogue_gives_the_same_result_alone_and_in_a_batch():
    model = tiny_model().eval()
    u, batch = make_batch(SPEAKERS)
    with torch.no_grad():
        together = model.context(u, batch)[0]
        for i, spk in enumerate(SPEAKERS):
            n = len(spk)
            alone = Batch(None, batch.n_utts[i:i + 1], batch.speakers[i:i + 1, :n], batch.labels[i:i + 1, :n], [0])
            assert torch.allclose(model.context(u[i:i + 1, :n], alone)[0][0], together[i, :n], atol=1e-6)


def test_backward_direction_reads_the_future():
    """Without attention the forward direction is causal: the output at t=0 does not change
    when a later utterance does; the bidirectional model's does."""
    u, batch = make_batch([[0, 1, 0, 1]])
    later = u.clone()
    later[0, 3] += 1.0
    with torch.no_grad():
        uni = tiny_model(bidirectional=False, attention=False).eval()
        assert torch.equal(uni.context(u, batch)[0][0, :3], uni.context(later, batch)[0][0, :3])
        bi = tiny_model(bidirectional=True, attention=False).eval()
        assert not torch.allclose(bi.context(u, batch)[0][0, 0], bi.context(later, batch)[0][0, 0])


def test_loss_falls_when_overfitting_two_dialogues():
    model = tiny_model(seed=1, global_dim=16, party_dim=16, emotion_dim=16, hidden_dim=16).train()
    u, batch = make_batch([[0, 1, 0, 2], [0, 1, 1]], seed=3)
    losses = overfit_losses(model.parameters(), lambda: model.loss(model.context(u, batch), batch)[0], lr=0.02)
    assert losses[-1] < 0.5 * losses[0], losses


def test_dropout_only_in_training():
    model = tiny_model(dropout=0.3, rec_dropout=0.3, emotion_dropout=0.3)
    u, batch = make_batch(SPEAKERS)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model.context(u, batch)[0], model.context(u, batch)[0])
        model.train()
        assert not torch.equal(model.context(u, batch)[0], model.context(u, batch)[0])


def test_reverse_within_lengths_and_gru_update():
    rev = reverse_within_lengths(torch.tensor([3, 1, 2]), 4)
    assert rev.tolist() == [[2, 1, 0, 3], [0, 1, 2, 3], [1, 0, 2, 3]]
    torch.manual_seed(0)
    cell = torch.nn.GRUCell(3, 4)
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    gi = F.linear(x, cell.weight_ih, cell.bias_ih)
    gh = F.linear(h, cell.weight_hh, cell.bias_hh)
    assert torch.allclose(gru_update(gi, gh, h), cell(x, h), atol=1e-6)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="party_dim"):
        DialogueRNNConfig(party_dim=0)
    with pytest.raises(ConfigError, match="rec_dropout"):
        DialogueRNNConfig(rec_dropout=1.0)
    with pytest.raises(ConfigError, match="context_attention"):
        DialogueRNNConfig(context_attention="concat")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n_labels"):
        DialogueRNNConfig(n_labels=1)
    with pytest.raises(ConfigError, match="unknown fields"):
        DialogueRNNConfig.from_dict({"D_g": 150})
    assert DialogueRNNConfig.from_dict({"global_dim": 50}).global_dim == 50
