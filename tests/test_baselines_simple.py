"""The simple baselines of the paper's Tables 1-2: CNN, cLSTM and cLSTM+CRF."""
from __future__ import annotations

import itertools

import pytest
import torch

from iein.data.batching import IGNORE, Batch, collate, encode_with
from iein.data.conversation import Conversation, Utterance
from iein.encoders.glove import WordFeaturizer
from iein.encoders.glove_bigru import GloveBiGRU, GloveBiGRUConfig
from iein.encoders.glove_cnn import GloveCNN, GloveCNNConfig
from iein.errors import ConfigError
from iein.layers import BiRNN
from iein.models.clstm import CLSTM, CLSTMConfig
from iein.models.clstm_crf import CLSTMCRF, CLSTMCRFConfig, crf_log_partition, crf_partial_nll
from iein.models.cnn import CNN, CNNConfig
from iein.text.vocab import Vocab
from tests.conftest import overfit_losses

torch.set_num_threads(1)

LABELS = {"x": 0, "y": 1, "z": 2}
MODELS = [(CNN, CNNConfig), (CLSTM, CLSTMConfig), (CLSTMCRF, CLSTMCRFConfig)]
VOCAB = Vocab(["<pad>", "<unk>"] + [f"w{i}" for i in range(20)])
FEAT = WordFeaturizer(VOCAB)


def make_encoder(kind: str):
    if kind == "glove-bigru":
        return GloveBiGRU(GloveBiGRUConfig(vocab_size=len(VOCAB), embedding_dim=8, hidden=4), FEAT)
    return GloveCNN(GloveCNNConfig(vocab_size=len(VOCAB), embedding_dim=8, filter_sizes=(1, 2),
                                   n_filters=3, output_size=5, dropout=0.0), FEAT)


def make_model(cls, cfg_cls, encoder: str = "glove-bigru", **cfg):
    base = dict(n_labels=3, dropout=0.0)
    if cfg_cls is not CNNConfig:
        base.update(hidden=4, dense=5)
    return cls(cfg_cls(**{**base, **cfg}), make_encoder(encoder))


def dialogues() -> list[Conversation]:
    """Two dialogues of different lengths (5 and 2 utterances), every utterance labelled."""
    a = Conversation("a", [Utterance("A", "w1 w2 w3", "x"), Utterance("B", "w4", "y"),
                           Utterance("A", "w5 w6", "z"), Utterance("B", "w7 w8 w9 w10", "x"),
                           Utterance("A", "w11", "y")])
    b = Conversation("b", [Utterance("C", "w12 w13", "z"), Utterance("D", "w14 w15 w16", "y")])
    return [a, b]


def make_batch(convs: list[Conversation] | None = None, encoder_kind: str = "glove-bigru") -> Batch:
    convs = convs or dialogues()
    items = [encode_with(c, FEAT.featurize(c), LABELS) for c in convs]
    return collate(items, make_encoder(encoder_kind).collate)


# -- the contract: shapes


@pytest.mark.parametrize("encoder", ["glove-bigru", "glove-cnn"])
@pytest.mark.parametrize("cls,cfg_cls", MODELS)
def test_output_shapes(cls, cfg_cls, encoder):
    torch.manual_seed(0)
    model = make_model(cls, cfg_cls, encoder)
    batch = make_batch(encoder_kind=encoder)
    out = model(batch)
    assert model.n_steps == len(out.steps) == 1 and not model.is_oracle
    assert out.steps[0].shape == (2, 5, 3)
    assert out.loss is not None and out.loss.dim() == 0 and torch.isfinite(out.loss)
    ids, probs = model.decode(out.steps, batch), model.step_probs(out.steps, batch)
    assert ids.shape == (2, 1, 5) and ids.dtype == torch.long and int(ids.max()) < 3
    assert probs.shape == (2, 1, 5, 3)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 1, 5), atol=1e-5)


def test_cnn_ignores_context_and_clstm_reads_it():
    torch.manual_seed(0)
    batch = make_batch()
    u = torch.randn(2, 5, 8)
    u2 = u.clone()
    u2[0, 3] += 1.0  # change one utterance of dialogue 0
    for cls, cfg_cls in MODELS:
        model = make_model(cls, cfg_cls).eval()
        model.utterance_encoder = None  # context() must not need the encoder
        with torch.no_grad():
            a, b = model.context(u, batch)[0], model.context(u2, batch)[0]
        others = [0, 1, 2, 4]
        if cls is CNN:
            assert torch.equal(a[0, others], b[0, others])
        else:
            assert not torch.allclose(a[0, others], b[0, others])
        assert not torch.equal(a[0, 3], b[0, 3])


def test_clstm_layers_and_state_dict():
    torch.manual_seed(0)
    model = make_model(CLSTM, CLSTMConfig, layers=2)
    assert len(model.lstm) == 2
    assert "lstm.1.fwd.weight_ih_l0" in model.state_dict()
    out = model(make_batch())
    assert out.steps[0].shape == (2, 5, 3)


@pytest.mark.parametrize("grad", [True, False])  # training (chunked) and inference (packed) paths
def test_bilstm_equals_per_sequence_lstm(grad):
    torch.manual_seed(0)
    rnn = BiRNN(3, 4, cell="lstm")
    lengths = torch.tensor([6, 1, 3, 2, 5])
    x = torch.randn(5, 6, 3)
    with torch.set_grad_enabled(grad):
        out = rnn(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        seq = x[i : i + 1, :n]
        fwd, _ = rnn.fwd(seq)
        bwd, _ = rnn.bwd(seq.flip(1))
        assert torch.allclose(out[i, :n], torch.cat([fwd, bwd.flip(1)], -1)[0], atol=1e-6)
        assert torch.equal(out[i, n:], torch.zeros(6 - n, 8))


# -- padding invariance


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("cls,cfg_cls", MODELS)
def test_padding_never_reaches_real_positions(cls, cfg_cls, grad):
    torch.manual_seed(0)
    model = make_model(cls, cfg_cls, layers=2) if cls is not CNN else make_model(cls, cfg_cls)
    model.eval()
    batch = make_batch()
    real = batch.mask  # dialogue 1 has 3 padded rows
    u_zero = torch.randn(2, 5, 8) * real[..., None]
    u_junk = torch.where(real[..., None], u_zero, torch.randn(2, 5, 8) * 100)
    assert not torch.equal(u_zero, u_junk)
    with torch.set_grad_enabled(grad):
        s_zero, s_junk = model.context(u_zero, batch), model.context(u_junk, batch)
        assert torch.equal(s_zero[0][real], s_junk[0][real])
        d_zero, d_junk = model.decode(s_zero, batch), model.decode(s_junk, batch)
        p_zero, p_junk = model.step_probs(s_zero, batch), model.step_probs(s_junk, batch)
    assert torch.equal(d_zero[:, 0][real], d_junk[:, 0][real])
    assert torch.equal(p_zero[:, 0][real], p_junk[:, 0][real])


def test_crf_decode_and_probs_ignore_padded_emissions():
    """Even arbitrary emission scores at padded positions must not reach the CRF's outputs."""
    torch.manual_seed(0)
    model = make_model(CLSTMCRF, CLSTMCRFConfig)
    batch = make_batch()
    real = batch.mask
    em = torch.randn(2, 5, 3)
    junk = torch.where(real[..., None], em, torch.randn(2, 5, 3) * 50)
    with torch.no_grad():
        assert torch.equal(model.decode([em], batch)[:, 0][real], model.decode([junk], batch)[:, 0][real])
        assert torch.equal(model.step_probs([em], batch)[:, 0][real], model.step_probs([junk], batch)[:, 0][real])
        assert torch.equal(model.loss([em], batch)[0], model.loss([junk], batch)[0])


# -- training


@pytest.mark.parametrize("cls,cfg_cls", MODELS)
def test_loss_falls_when_overfitting_two_dialogues(cls, cfg_cls):
    torch.manual_seed(0)
    model = make_model(cls, cfg_cls).train()
    batch = make_batch()
    losses = overfit_losses(model.parameters(), lambda: model(batch).loss, lr=0.03)
    assert losses[-1] < 0.5 * losses[0], losses


def test_crf_parameters_are_checkpointed():
    torch.manual_seed(0)
    a, b = make_model(CLSTMCRF, CLSTMCRFConfig), make_model(CLSTMCRF, CLSTMCRFConfig)
    keys = set(a.state_dict())
    assert {"crf.start_transitions", "crf.end_transitions", "crf.transitions"} <= keys
    with torch.no_grad():
        b.crf.transitions.fill_(-5.0)
        b.crf.transitions.diagonal().fill_(5.0)  # b strongly prefers repeating a label
    a.load_state_dict(b.state_dict())
    assert torch.equal(a.crf.transitions, b.crf.transitions)
    param_ids = {id(p) for g in a.param_groups(0.01) for p in g["params"]}
    assert id(a.crf.transitions) in param_ids  # the CRF is trained too


def test_crf_refuses_class_weights():
    model = make_model(CLSTMCRF, CLSTMCRFConfig)
    with pytest.raises(ConfigError):
        model(make_batch(), class_weight=torch.ones(3))


# -- the CRF against brute force


def brute_force(em: torch.Tensor, start, end, trans, observed=None):
    """Scores of all L^n sequences of one dialogue (em (n, L)): (log Z, viterbi, marginals,
    log Z over sequences agreeing with ``observed``, IGNORE = free)."""
    n, n_labels = em.shape
    seqs = list(itertools.product(range(n_labels), repeat=n))
    scores = torch.stack([start[s[0]] + end[s[-1]] + sum(em[t, s[t]] for t in range(n))
                          + sum(trans[s[t - 1], s[t]] for t in range(1, n)) for s in seqs])
    log_z = torch.logsumexp(scores, 0)
    probs = torch.exp(scores - log_z)
    marg = torch.zeros(n, n_labels, dtype=em.dtype)
    for s, p in zip(seqs, probs):
        for t in range(n):
            marg[t, s[t]] += p
    log_z_obs = None
    if observed is not None:
        ok = torch.tensor([all(o == IGNORE or o == y for o, y in zip(observed, s)) for s in seqs])
        log_z_obs = torch.logsumexp(scores[ok], 0)
    return log_z, list(seqs[int(scores.argmax())]), marg, log_z_obs


@pytest.fixture
def crf_case():
    """Model with fixed CRF parameters and a batch of two dialogues (4 and 2 utterances)."""
    torch.manual_seed(0)
    model = make_model(CLSTMCRF, CLSTMCRFConfig).double()
    with torch.no_grad():
        model.crf.start_transitions.copy_(torch.tensor([0.5, -0.3, 0.1]))
        model.crf.end_transitions.copy_(torch.tensor([-0.2, 0.4, 0.0]))
        model.crf.transitions.copy_(torch.tensor([[1.0, -0.5, 0.2], [-1.0, 0.8, 0.3], [0.1, -0.7, 0.6]]))
    em = torch.tensor([[[0.2, 1.1, -0.4], [0.9, -0.2, 0.3], [-0.6, 0.4, 1.5], [0.3, 0.3, -1.0]],
                       [[1.2, 0.1, -0.3], [-0.5, 0.7, 0.2], [9.0, -9.0, 3.0], [-4.0, 5.0, 0.0]]],
                      dtype=torch.float64)  # row 1 is padded after 2 utterances
    labels = torch.tensor([[0, 2, 2, 1], [1, 1, IGNORE, IGNORE]])
    n_utts = torch.tensor([4, 2])
    batch = Batch(None, n_utts, torch.zeros(2, 4, dtype=torch.long), labels, [0, 1])
    return model, em, batch


def test_crf_matches_brute_force(crf_case):
    model, em, batch = crf_case
    crf, mask = model.crf, batch.mask
    log_z = crf_log_partition(em, mask, crf)
    with torch.no_grad():
        paths = model.decode([em], batch)[:, 0]
        marg = model.step_probs([em], batch)[:, 0]
        loss, parts = model.loss([em], batch)
    nll = []
    for i, n in enumerate(batch.n_utts.tolist()):
        bz, bpath, bmarg, bz_obs = brute_force(em[i, :n], crf.start_transitions, crf.end_transitions,
                                               crf.transitions, batch.labels[i, :n].tolist())
        assert torch.allclose(log_z[i], bz, atol=1e-10)
        assert paths[i, :n].tolist() == bpath
        assert torch.allclose(marg[i, :n], bmarg, atol=1e-10)
        assert torch.allclose(marg[i, :n].sum(-1), torch.ones(n, dtype=em.dtype), atol=1e-12)
        nll.append(bz - bz_obs)  # fully labelled: -log p(y) = log Z - score(y)
    assert torch.allclose(loss, torch.stack(nll).mean(), atol=1e-10)
    assert parts == {"nll": pytest.approx(float(loss))}


def test_crf_viterbi_can_differ_from_marginal_argmax(crf_case):
    """The decoded label is Viterbi's, even where the marginal argmax disagrees."""
    model, _, batch = crf_case
    with torch.no_grad():
        model.crf.start_transitions.zero_()
        model.crf.end_transitions.zero_()
        # label 0 only follows itself; labels 1 and 2 follow each other freely
        model.crf.transitions.copy_(torch.tensor([[0.0, -9.0, -9.0], [-9.0, 0.0, 0.0], [-9.0, 0.0, 0.0]]))
    # the single best sequence is 0000 (score 1), but 16 sequences over {1, 2} score 0 each,
    # so each of labels 1 and 2 has more marginal mass at the first utterance than label 0
    em = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]] * 2,
                      dtype=torch.float64)
    with torch.no_grad():
        path = model.decode([em], batch)[0, 0]
        marg = model.step_probs([em], batch)[0, 0]
    bz, bpath, bmarg, _ = brute_force(em[0], model.crf.start_transitions, model.crf.end_transitions,
                                      model.crf.transitions)
    assert path.tolist() == bpath and torch.allclose(marg, bmarg, atol=1e-10)
    assert path.tolist() == [0, 0, 0, 0] and int(marg[0].argmax()) != 0


def test_crf_marginalises_unlabelled_utterances(crf_case):
    model, em, batch = crf_case
    crf = model.crf
    labels = torch.tensor([[0, IGNORE, 2, IGNORE], [IGNORE, 1, IGNORE, IGNORE]])
    partial = Batch(None, batch.n_utts, batch.speakers, labels, [0, 1])
    nll = crf_partial_nll(em, labels, batch.mask, crf)
    expected = []
    for i, n in enumerate(batch.n_utts.tolist()):
        bz, _, _, bz_obs = brute_force(em[i, :n], crf.start_transitions, crf.end_transitions,
                                       crf.transitions, labels[i, :n].tolist())
        expected.append(bz - bz_obs)
    assert torch.allclose(nll, torch.stack(expected), atol=1e-10)
    loss, _ = model.loss([em], partial)
    assert torch.allclose(loss, torch.stack(expected).mean(), atol=1e-10)
    # a dialogue without labels adds nothing to the mean
    none = torch.tensor([[0, IGNORE, 2, IGNORE], [IGNORE, IGNORE, IGNORE, IGNORE]])
    loss_one, _ = model.loss([em], Batch(None, batch.n_utts, batch.speakers, none, [0, 1]))
    assert torch.allclose(loss_one, expected[0], atol=1e-10)
    # fully labelled: the marginalised NLL is the library's NLL
    full = crf_partial_nll(em, batch.labels, batch.mask, crf)
    lib = -crf(em, batch.labels.clamp(min=0), batch.mask, reduction="none")
    assert torch.allclose(full, lib, atol=1e-10)


def test_crf_partial_loss_has_finite_gradients(crf_case):
    model, em, batch = crf_case
    em = em.clone().requires_grad_(True)
    labels = torch.tensor([[0, IGNORE, 2, IGNORE], [1, 1, IGNORE, IGNORE]])
    loss, _ = model.loss([em], Batch(None, batch.n_utts, batch.speakers, labels, [0, 1]))
    loss.backward()
    assert torch.isfinite(em.grad).all() and em.grad.abs().sum() > 0
    assert torch.isfinite(model.crf.transitions.grad).all()


# -- configs


@pytest.mark.parametrize("cfg_cls,bad", [
    (CNNConfig, dict(n_labels=1)), (CNNConfig, dict(dropout=1.0)), (CNNConfig, dict(dropout=-0.1)),
    (CLSTMConfig, dict(hidden=0)), (CLSTMConfig, dict(dense=0)), (CLSTMConfig, dict(layers=0)),
    (CLSTMConfig, dict(n_labels=1)), (CLSTMConfig, dict(dropout=1.5)),
    (CLSTMCRFConfig, dict(layers=0)), (CLSTMCRFConfig, dict(dropout=1.0)),
])
def test_configs_reject_bad_values(cfg_cls, bad):
    with pytest.raises(ConfigError) as err:
        cfg_cls(**bad)
    assert cfg_cls.section in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError):
        cfg_cls.from_dict({**cfg_cls().to_dict(), **bad})


def test_configs_round_trip_and_reject_unknown_fields():
    for _, cfg_cls in MODELS:
        cfg = cfg_cls(n_labels=4)
        assert cfg_cls.from_dict(cfg.to_dict()) == cfg
        with pytest.raises(ConfigError):
            cfg_cls.from_dict({"n_labels": 4, "hiden": 3})
    assert CLSTMConfig().hidden == 100 and CLSTMConfig().dense == 100 and CLSTMConfig().layers == 1
