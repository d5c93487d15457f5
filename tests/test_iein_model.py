"""Unit tests of every block of the IEIN model and of each loss term (eq. 1-13)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from iein.data.batching import IGNORE, Batch, EncodedConversation
from iein.encoders.glove import WordFeaturizer
from iein.encoders.glove_bigru import GloveBiGRU, GloveBiGRUConfig
from iein.errors import ConfigError
from iein import layers
from iein.layers import AttentionPooling, BiGRU, gru_cell, length_groups, scatter_utterances
from iein.models.iein import IEIN, ECEncoder, IEINConfig, iein_loss
from iein.text.vocab import Vocab

VOCAB = Vocab(["<pad>", "<unk>"] + [f"w{i}" for i in range(28)])  # 30 words
UTT_HIDDEN = 5  # GRU size of the eq. 1-3 encoder: u_i has 2 * 5 = 10 dimensions


def tiny_cfg(**kw) -> IEINConfig:
    base = dict(n_labels=4, emotion_dim=3, iterations=2, dropout=0.0)
    base.update(kw)
    return IEINConfig(**base)


def tiny_encoder(hidden: int = UTT_HIDDEN, embedding_dim: int = 6) -> GloveBiGRU:
    cfg = GloveBiGRUConfig(vocab_size=len(VOCAB), embedding_dim=embedding_dim, hidden=hidden, dropout=0.0)
    return GloveBiGRU(cfg, WordFeaturizer(VOCAB))


def tiny_model(**kw) -> IEIN:
    return IEIN(tiny_cfg(**kw), tiny_encoder())


def tiny_batch(seed: int = 0) -> Batch:
    """Two dialogues (3 and 2 utterances) with padded words and one padded utterance slot."""
    g = torch.Generator().manual_seed(seed)
    word_lengths = torch.tensor([4, 2, 3, 1, 4])
    tokens = torch.zeros(5, 4, dtype=torch.long)
    for i, n in enumerate(word_lengths.tolist()):
        tokens[i, :n] = torch.randint(2, 30, (n,), generator=g)
    n_utts = torch.tensor([3, 2])
    speakers = torch.tensor([[0, 1, 0], [0, 1, -1]])
    labels = torch.tensor([[0, 1, 2], [3, 1, IGNORE]])
    return Batch((tokens, word_lengths), n_utts, speakers, labels, [0, 1])


def with_inputs(batch: Batch, tokens: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> Batch:
    """``batch`` with other word ids and/or gold labels."""
    tok = batch.inputs[0] if tokens is None else tokens
    return Batch((tok, batch.inputs[1]), batch.n_utts, batch.speakers,
                 batch.labels if labels is None else labels, batch.index)


def steps_of(model: IEIN, batch: Batch) -> list[torch.Tensor]:
    return model(batch).steps


def test_context_hidden_matches_paper_sizes():
    # eq. 7 sums GRU states with [u; e]: hidden must be 2*utt_hidden + emotion_dim
    def ec_hidden(hidden: int, **kw) -> int:
        return IEIN(IEINConfig(**kw), tiny_encoder(hidden=hidden)).ec_encoder.gru.hidden_size

    assert ec_hidden(100, emotion_dim=32) == 232  # MELD
    assert ec_hidden(50, emotion_dim=32) == 132  # IEMOCAP
    assert ec_hidden(50, variant="no_label") == 100


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="iterations"):
        IEINConfig(iterations=-1)
    with pytest.raises(ConfigError, match="variant"):
        IEINConfig(variant="oracle")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown fields"):
        IEINConfig.from_dict({"n_labels": 3, "bogus": 1})


def test_attention_pooling_hand_computed():
    pool = AttentionPooling(2)
    with torch.no_grad():
        pool.w_u.weight.copy_(torch.tensor([[1.0, 0.0]]))
    h = torch.tensor([[[0.0, 1.0], [math.log(3.0), 2.0], [9.0, 9.0]]])  # third word is padding
    mask = torch.tensor([[True, True, False]])
    # scores 0 and ln 3 -> alpha = (1/4, 3/4); u = 1/4*[0,1] + 3/4*[ln3, 2]
    expected = torch.tensor([[0.75 * math.log(3.0), 0.25 + 1.5]])
    assert torch.allclose(pool(h, mask), expected, atol=1e-6)


def test_gru_cell_matches_torch_gru():
    torch.manual_seed(0)
    gru = torch.nn.GRU(3, 4, batch_first=True)
    x, h0 = torch.randn(2, 1, 3), torch.randn(1, 2, 4)
    out, _ = gru(x, h0)
    assert torch.allclose(gru_cell(x[:, 0], h0[0], gru), out[:, 0], atol=1e-6)


@pytest.mark.parametrize("path", ["scan", "groups", "packed"])  # training (CPU GRU / LSTM, GPU), inference
@pytest.mark.parametrize("batch", [3, 200])  # one chunk and several length-sorted chunks
def test_bigru_equals_per_sequence_bidirectional_gru(batch, path, monkeypatch):
    torch.manual_seed(0)
    bigru = BiGRU(3, 4)
    layers.use_gru_scan(bigru, path == "scan")
    lengths = torch.randint(1, 9, (batch,))
    x = torch.randn(batch, 9, 3)
    assert bigru.scans(x) == (path == "scan")  # the switch reaches the module (grad is on here)
    with torch.set_grad_enabled(path != "packed"):
        out = bigru(x, lengths)
    for i in [0, 1, batch - 1]:
        n = int(lengths[i])
        seq = x[i : i + 1, :n]
        fwd, _ = bigru.fwd(seq)
        bwd, _ = bigru.bwd(seq.flip(1))
        assert torch.allclose(out[i, :n], torch.cat([fwd, bwd.flip(1)], -1)[0], atol=1e-6)
        assert torch.equal(out[i, n:], torch.zeros(9 - n, 8))


@pytest.mark.parametrize("lengths", [[5, 1, 3, 3, 7, 2, 7], [1, 1, 1], [6], [4, 4, 4, 4], list(range(1, 30))])
def test_gru_scan_values_and_gradients_equal_nn_gru(lengths):
    """The packed scan's hand-written backward against autograd through ``nn.GRU``, one
    sequence at a time, in float64 (so any difference beyond rounding is a wrong formula):
    outputs, d/d inputs and d/d every weight and bias of both directions."""
    torch.manual_seed(0)
    bigru = BiGRU(3, 5).double()
    lens = torch.tensor(lengths)
    width = max(lengths) + 2  # trailing padding that no sequence reaches
    x = torch.randn(len(lengths), width, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(len(lengths), width, 10, dtype=torch.float64)  # a loss that reads every output
    assert bigru.scans(x)  # the public forward takes the packed scan here
    out = bigru(x, lens)
    got = torch.autograd.grad((out * weight).sum(), [x, *bigru.parameters()])
    ref_out = torch.zeros_like(out)
    for i, n in enumerate(lengths):
        seq = x[i : i + 1, :n]
        fwd, _ = bigru.fwd(seq)
        bwd, _ = bigru.bwd(seq.flip(1))
        ref_out[i, :n] = torch.cat([fwd, bwd.flip(1)], -1)[0]
    ref = torch.autograd.grad((ref_out * weight).sum(), [x, *bigru.parameters()])
    assert torch.allclose(out, ref_out, atol=1e-12)
    assert torch.equal(out[lens[:, None] <= torch.arange(width)], torch.zeros(int((width - lens).sum()), 10, dtype=torch.float64))
    for name, a, b in zip(["x", *(n for n, _ in bigru.named_parameters())], got, ref):
        assert torch.allclose(a, b, atol=1e-10), name


def test_gru_scan_is_the_cpu_training_path_and_lstm_keeps_groups(monkeypatch):
    calls = []
    monkeypatch.setattr(layers.BiRNN, "_forward_scan", lambda self, x, l: calls.append("scan") or torch.zeros(()))
    monkeypatch.setattr(layers.BiRNN, "_forward_groups", lambda self, x, l: calls.append("groups") or torch.zeros(()))
    x, lens = torch.randn(2, 3, 4), torch.tensor([3, 1])
    layers.BiRNN(4, 2, cell="gru")(x, lens)
    layers.BiRNN(4, 2, cell="lstm")(x, lens)
    assert calls == ["scan", "groups"]


def test_packed_rows_layout():
    lengths = torch.tensor([3, 1, 4, 2])
    rows = layers.packed_rows(lengths, 5)
    assert rows.batch_sizes == [4, 3, 2, 1]  # sequences still running at each step
    assert torch.equal(rows.fwd_pos[:4], torch.tensor([10, 0, 15, 5]))  # longest first, step 0
    assert torch.equal(rows.fwd_pos[rows.bwd_rows], rows.bwd_pos)
    assert torch.equal(rows.bwd_rows[rows.fwd_rows], torch.arange(10))
    assert sorted(rows.fwd_pos.tolist()) == sorted(rows.bwd_pos.tolist()) == [
        b * 5 + i for b, n in enumerate(lengths.tolist()) for i in range(n)]
    assert torch.equal(rows.bwd_pos[:4], torch.tensor([13, 2, 16, 5]))  # each sequence's last item


def test_attention_pooling_over_packed_rows_equals_padded():
    torch.manual_seed(0)
    pool = AttentionPooling(3)
    lengths, width = torch.tensor([2, 5, 1, 3]), 6
    h = torch.randn(4, width, 3) * layers.length_mask(lengths, width)[..., None]
    pos = layers.packed_rows(lengths, width).fwd_pos
    got = pool.pool_rows(h.reshape(-1, 3)[pos], pos, 4, width)
    torch.testing.assert_close(got, pool(h, layers.length_mask(lengths, width)), atol=1e-6, rtol=0)


def _train_step(module, inputs_fn, seed: int = 5):
    """Output, parameter gradients and the RNG state after one seeded training forward."""
    torch.manual_seed(seed)
    out = inputs_fn()
    grads = torch.autograd.grad(out.square().sum(), [p for p in module.parameters() if p.requires_grad])
    return out.detach(), grads, torch.get_rng_state()


def test_word_encoder_trains_on_real_words_only_as_the_padded_forward():
    """CPU training of ``glove-bigru`` never pads (embedding, dropout, BiGRU, attention on
    the real words): the same values and gradients as the padded forward, and the same
    dropout mask, so a seeded run's random stream is unchanged."""
    from iein.encoders.glove import GloveEncoder

    torch.manual_seed(0)
    cfg = GloveBiGRUConfig(vocab_size=len(VOCAB), embedding_dim=6, hidden=5, dropout=0.3)
    enc = GloveBiGRU(cfg, WordFeaturizer(VOCAB)).train()
    lengths, width = torch.randint(1, 12, (40,)), 14
    tokens = torch.zeros(40, width, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        tokens[i, :n] = torch.randint(2, 30, (n,))
    calls = []
    enc.encode_words = lambda x, l: calls.append("padded") or GloveBiGRU.encode_words(enc, x, l)
    got = _train_step(enc, lambda: enc((tokens, lengths)))
    assert calls == []  # the training path did not pad
    ref = _train_step(enc, lambda: GloveEncoder.forward(enc, (tokens, lengths)))
    assert calls == ["padded"]
    torch.testing.assert_close(got[0], ref[0], atol=1e-6, rtol=0)
    for a, b in zip(got[1], ref[1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert torch.equal(got[2], ref[2])
    assert not torch.equal(ref[0], _train_step(enc, lambda: enc((tokens, lengths)), seed=6)[0])  # dropout acts


@pytest.mark.parametrize("variant", ["iein", "no_label", "gold_label"])
def test_ec_encoder_shared_passes_equal_the_padded_forward(variant, monkeypatch):
    """CPU training runs the EC-Encoder's T passes on packed rows with u projected once
    (:meth:`ECEncoder.share`); the padded forward over length groups is the reference:
    same losses and gradients up to rounding, same random stream (dropout, feedback dropout)."""
    torch.manual_seed(0)
    enc = GloveBiGRU(GloveBiGRUConfig(vocab_size=len(VOCAB), embedding_dim=6, hidden=5, dropout=0.3),
                     WordFeaturizer(VOCAB))
    model = IEIN(tiny_cfg(variant=variant, dropout=0.3, feedback_dropout=0.2 if variant == "iein" else 0.0),
                 enc).train()
    batch = tiny_batch()
    shares = []
    share = ECEncoder.share

    def counted_share(self, u, n):
        shared = share(self, u, n)
        shares.append(shared is not None)
        return shared

    monkeypatch.setattr(ECEncoder, "share", counted_share)
    results = {}
    for scan in (True, False):
        layers.use_gru_scan(model, scan)
        torch.manual_seed(7)
        out = model(batch)
        results[scan] = (out.loss.detach(), torch.autograd.grad(out.loss, list(model.parameters())),
                         torch.get_rng_state(), out.steps)
    if variant == "iein":  # the scan shares once per forward, not once per pass; groups never
        assert shares.count(True) == 1 and shares[0]
    (l1, g1, s1, st1), (l2, g2, s2, st2) = results[True], results[False]
    torch.testing.assert_close(l1, l2, atol=1e-6, rtol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert torch.equal(s1, s2)
    real = batch.labels != IGNORE
    for a, b in zip(st1, st2):
        torch.testing.assert_close(a[real], b[real], atol=1e-6, rtol=0)


def _group_cost(lengths: list[int], groups: list[tuple[int, int]], step_cost: int) -> int:
    return sum(lengths[end - 1] * (end - start + step_cost) for start, end in groups)


@pytest.mark.parametrize("seed", range(20))
def test_length_groups_is_the_cheapest_contiguous_split(seed):
    """Against brute force over every contiguous split of up to 9 sorted lengths."""
    import itertools, random
    rng = random.Random(seed)
    lengths = sorted(rng.randint(1, 12) for _ in range(rng.randint(1, 9)))
    step_cost = rng.choice([0, 2, 16, 100])
    groups = length_groups(lengths, step_cost)
    assert groups[0][0] == 0 and groups[-1][1] == len(lengths)
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(groups, groups[1:] + [(groups[-1][1], None)]))
    n = len(lengths)
    best = min(
        _group_cost(lengths, list(zip((0,) + cut, cut + (n,))), step_cost)
        for k in range(n) for cut in itertools.combinations(range(1, n), k)
    )
    assert _group_cost(lengths, groups, step_cost) == best
    if step_cost >= 100:  # overhead dominates: one group
        assert groups == [(0, n)]


def test_scatter_utterances():
    flat = torch.arange(10.0).view(5, 2)
    grid = scatter_utterances(flat, torch.tensor([3, 2]))
    assert grid.shape == (2, 3, 2)
    assert torch.equal(grid[1, :2], flat[3:]) and torch.equal(grid[1, 2], torch.zeros(2))


def test_emotion_embedding_is_probability_weighted_sum():
    # eq. 4: e_i = sum_j p_i^j x_j
    cfg = tiny_cfg()
    ec = ECEncoder(cfg, 2 * UTT_HIDDEN)
    p = torch.tensor([[0.5, 0.25, 0.25, 0.0]])
    x = ec.emotion_embedding.weight.T  # rows are the emotion embeddings x_j
    expected = 0.5 * x[0] + 0.25 * x[1] + 0.25 * x[2]
    assert torch.allclose(ec.emotion_embedding(p)[0], expected, atol=1e-6)


def test_ec_encoder_residual_eq7():
    cfg = tiny_cfg()
    utterance_dim = 2 * UTT_HIDDEN
    ec = ECEncoder(cfg, utterance_dim)
    assert ec.gru.hidden_size == utterance_dim + cfg.emotion_dim
    with torch.no_grad():  # zero GRU => h_i = [u_i; e_i] exactly (eq. 7 residual)
        for p in ec.gru.parameters():
            p.zero_()
        ec.classifier.weight.copy_(torch.eye(cfg.n_labels, utterance_dim + cfg.emotion_dim))
        ec.classifier.bias.zero_()
    u = torch.randn(1, 2, utterance_dim)
    p = torch.softmax(torch.randn(1, 2, cfg.n_labels), -1)
    logits = ec(u, p, torch.tensor([2]))
    # GRU with zero weights: n = 0, z = 0.5 -> h stays 0, so logits = first L dims of [u; e]
    assert torch.allclose(logits, ec.inputs(u, p)[..., : cfg.n_labels], atol=1e-6)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("variant", ["iein", "no_label", "gold_label"])
def test_padding_does_not_leak(variant, grad):
    torch.set_grad_enabled(grad)
    torch.manual_seed(0)
    model = tiny_model(variant=variant).eval()
    batch = tiny_batch()
    (tokens, wl), labels = batch.inputs, batch.labels
    ref = steps_of(model, batch)
    # change every padded word and add an extra padded word column
    tokens2 = tokens.clone()
    for i, n in enumerate(wl.tolist()):
        tokens2[i, n:] = 7
    tokens3 = torch.cat([tokens2, torch.full((5, 1), 9)], dim=1)
    # change the padded utterance slot's label (dialogue 2 has only 2 utterances)
    labels2 = labels.clone()
    labels2[1, 2] = 3
    for t, lab in ((tokens2, labels), (tokens3, labels2)):
        out = steps_of(model, with_inputs(batch, t, lab))
        assert len(out) == len(ref)
        for a, b in zip(ref, out):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1, :2], b[1, :2])
    torch.set_grad_enabled(True)


def test_number_of_steps_and_shapes():
    batch = tiny_batch()
    for t in (0, 1, 3):
        model = tiny_model(iterations=t)
        steps = steps_of(model, batch)
        assert len(steps) == t + 1 == model.n_steps and all(s.shape == (2, 3, 4) for s in steps)
    assert len(steps_of(tiny_model(variant="no_label"), batch)) == 2
    assert tiny_model(variant="no_label").ec_encoder.emotion_embedding is None


def test_iterations_share_one_ec_encoder():
    # eq. 10: the same EC-Encoder at every step; feeding step-1 output back gives step 2
    torch.manual_seed(0)
    model = tiny_model(iterations=2).eval()
    batch = tiny_batch()
    steps = steps_of(model, batch)
    u = model.utterance_vectors(batch)
    again = model.ec_encoder(u, torch.softmax(steps[1], -1), batch.n_utts)
    assert torch.allclose(again, steps[2], atol=1e-6)


def test_gold_label_never_sees_its_own_label():
    torch.manual_seed(0)
    model = tiny_model(variant="gold_label").eval()
    assert model.is_oracle and not tiny_model().is_oracle
    batch = tiny_batch()
    ref = steps_of(model, batch)[-1]
    changed = batch.labels.clone()
    changed[0, 1] = 3  # change the gold label of utterance 1 in dialogue 0
    out = steps_of(model, with_inputs(batch, labels=changed))[-1]
    assert torch.equal(out[0, 1], ref[0, 1])  # its own output is unaffected ...
    assert not torch.allclose(out[0, 0], ref[0, 0])  # ... its neighbours see it
    assert not torch.allclose(out[0, 2], ref[0, 2])
    assert torch.equal(out[1], ref[1])  # other dialogues untouched
    with pytest.raises(ConfigError):  # the oracle cannot run without gold labels
        model.iterate(model.utterance_vectors(batch), batch.n_utts)


def test_loss_cross_entropy_terms_hand_computed():
    # one utterance, gold class 0; steps with p_gold = 0.5 and 0.8 (two classes)
    l0 = torch.tensor([[[0.0, 0.0]]])
    l1 = torch.tensor([[[math.log(4.0), 0.0]]])  # softmax -> (0.8, 0.2)
    y = torch.tensor([[0]])
    loss, parts = iein_loss([l0, l1], y, lam=5.0)
    ce = (-math.log(0.5) - math.log(0.8)) / 2  # eq. 11 averaged over T+1 = 2 steps (eq. 13)
    assert parts["adj"] == pytest.approx(0.0)  # gold prob rose: no margin penalty (eq. 12)
    assert float(loss) == pytest.approx(ce, abs=1e-6)


def test_loss_margin_term_hand_computed():
    # gold prob drops 0.8 -> 0.5 at step 1, rises 0.5 -> 0.8 at step 2
    hi = torch.tensor([[[math.log(4.0), 0.0]]])
    lo = torch.tensor([[[0.0, 0.0]]])
    y = torch.tensor([[0]])
    loss, parts = iein_loss([hi, lo, hi], y, lam=10.0)
    ce = (-2 * math.log(0.8) - math.log(0.5)) / 3
    adj = (0.3 + 0.0) / 2  # eq. 12 per adjacent pair, averaged over T = 2 (eq. 13)
    assert parts["adj"] == pytest.approx(adj, abs=1e-6)
    assert float(loss) == pytest.approx(ce + 10.0 * adj, abs=1e-6)


def test_loss_ignores_padding_and_margin_does_not_push_earlier_step_down():
    l0 = torch.tensor([[[2.0, 0.0], [5.0, -5.0]]], requires_grad=True)
    l1 = torch.tensor([[[0.0, 0.0], [-5.0, 5.0]]], requires_grad=True)
    y = torch.tensor([[0, IGNORE]])
    loss, _ = iein_loss([l0, l1], y, lam=100.0)
    loss.backward()
    assert torch.equal(l0.grad[0, 1], torch.zeros(2)) and torch.equal(l1.grad[0, 1], torch.zeros(2))
    # only the CE gradient reaches step 0: it raises the gold logit (negative gradient)
    ce_only = torch.autograd.grad(F.cross_entropy(l0[0, :1], y[0, :1]) / 2, l0)[0]
    assert torch.allclose(l0.grad, ce_only, atol=1e-6)
    assert l1.grad[0, 0, 0] < 0


def test_model_loss_is_eq_13_with_the_configs_lambda():
    # lambda is a model setting now (it used to be a training one): forward uses it
    batch = tiny_batch()
    for lam in (0.0, 7.0):
        torch.manual_seed(0)
        model = tiny_model(lam=lam).eval()
        out = model(batch)
        ref, parts = iein_loss(out.steps, batch.labels, lam)
        assert torch.equal(out.loss, ref) and out.parts == parts
    unlabelled = with_inputs(batch, labels=torch.full_like(batch.labels, IGNORE))
    assert model(unlabelled).loss is None  # nothing to learn from: no loss, no NaN
    with pytest.raises(ConfigError, match="lam"):
        tiny_cfg(lam=-1.0)


def test_loss_with_class_weights_and_single_step():
    logits = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    y = torch.tensor([[0, 1]])
    w = torch.tensor([1.0, 3.0])
    loss, parts = iein_loss([logits], y, lam=5.0, class_weight=w)
    per = -torch.log_softmax(logits[0], -1)[[0, 1], [0, 1]]
    assert float(loss) == pytest.approx(float((1 * per[0] + 3 * per[1]) / 4), abs=1e-6)
    assert parts["adj"] == 0.0


def test_detach_feedback_blocks_gradient_between_steps():
    torch.manual_seed(0)
    model = tiny_model(iterations=1, detach_feedback=True)
    steps = steps_of(model, tiny_batch())
    steps[1].sum().backward()
    assert model.ec_encoder.classifier.weight.grad is not None  # the step itself is trained
    assert model.initial_classifier.weight.grad is None or torch.all(model.initial_classifier.weight.grad == 0)


def twins_equal_in_eval(batch: Batch, **kw) -> tuple[IEIN, IEIN]:
    """The paper's model and one with the training-only settings ``kw``, from the same seed;
    checks that in eval mode (inference) they give the same steps."""
    torch.manual_seed(0)
    plain = tiny_model().eval()
    torch.manual_seed(0)
    other = tiny_model(**kw).eval()
    for a, b in zip(steps_of(plain, batch), steps_of(other, batch)):
        assert torch.equal(a, b)
    return plain, other


def test_gold_context_acts_in_training_only_and_never_shows_an_utterance_its_own_label():
    batch = tiny_batch()
    plain, mixed = twins_equal_in_eval(batch, gold_context=1.0)  # inference: the paper's passes
    mixed.train()  # dropout 0, so training differs from eval only by the gold context
    trained = steps_of(mixed, batch)
    assert torch.equal(trained[0], steps_of(plain, batch)[0])  # P^0 reads no label
    assert not torch.allclose(trained[1], steps_of(plain, batch)[1])
    changed = batch.labels.clone()
    changed[0, 1] = 3  # the gold label of utterance 1 of dialogue 0
    out = steps_of(mixed, with_inputs(batch, labels=changed))
    # step 1: utterance 1 reads its own prediction, its neighbours read its (new) gold label
    assert torch.equal(out[1][0, 1], trained[1][0, 1])
    assert not torch.allclose(out[1][0, 0], trained[1][0, 0])
    assert torch.equal(out[1][1], trained[1][1])  # other dialogues untouched


def test_gold_context_rejects_bad_values():
    with pytest.raises(ConfigError, match="gold_context"):
        tiny_cfg(gold_context=1.5)
    with pytest.raises(ConfigError, match="gold_context"):
        tiny_cfg(gold_context=0.5, variant="no_label")


def test_feedback_dropout_only_acts_in_training():
    batch = tiny_batch()
    _, dropped = twins_equal_in_eval(batch, feedback_dropout=0.5)
    dropped.train()
    torch.manual_seed(1)
    s1 = steps_of(dropped, batch)
    dropped.ec_encoder.dropout.p = 0.0
    torch.manual_seed(1)
    s2 = steps_of(dropped, batch)
    assert torch.equal(s1[0], s2[0])  # P^0 does not depend on feedback dropout
    with pytest.raises(ConfigError):
        tiny_cfg(feedback_dropout=1.0)


def test_bigru_inference_path_follows_loaded_weights_and_leaves_rng_alone():
    torch.manual_seed(0)
    a, b = BiGRU(3, 4), BiGRU(3, 4)
    x, lengths = torch.randn(5, 6, 3), torch.tensor([6, 1, 3, 2, 5])
    with torch.no_grad():
        a(x, lengths)  # builds a's shared bidirectional view
        state = torch.get_rng_state()
        b(x, lengths)
        assert torch.equal(state, torch.get_rng_state())  # building the view drew no random numbers
        a.load_state_dict(b.state_dict())
        assert torch.allclose(a(x, lengths), b(x, lengths), atol=1e-6)
    assert set(a.state_dict()) == {f"{d}.{n}" for d in ("fwd", "bwd")
                                   for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")}


@pytest.mark.parametrize("variant", ["iein", "no_label", "gold_label"])
def test_inference_path_equals_the_batched_forward(variant, monkeypatch):
    """``infer`` (evaluation, Recognizer, server) encodes utterances in length-sorted
    chunks (``encoder.encode_many``) instead of the training batch layout; it must give
    the forward's probabilities."""
    import iein.evaluation.evaluate as ev

    torch.manual_seed(0)
    model = tiny_model(variant=variant).eval()
    batch = tiny_batch()
    (tokens, wl), labels = batch.inputs, batch.labels
    with torch.no_grad():
        ref = torch.stack([torch.softmax(s, -1) for s in steps_of(model, batch)], dim=1).numpy()
    utts = [tokens[i, : int(wl[i])].numpy() for i in range(len(wl))]
    items = [EncodedConversation("a", utts[:3], labels[0].numpy(), batch.speakers[0].numpy()),
             EncodedConversation("b", utts[3:], labels[1, :2].numpy(), batch.speakers[1, :2].numpy())]
    # several chunks even for this tiny batch
    monkeypatch.setattr(model.utterance_encoder, "chunk_tokens", 4)
    got, ids = ev.infer(model, items)
    assert got.shape == ref.shape and ids.shape == ref.shape[:-1]
    np.testing.assert_allclose(got[0], ref[0], atol=1e-6)
    np.testing.assert_allclose(got[1, :, :2], ref[1, :, :2], atol=1e-6)
    assert np.array_equal(ids[0], got[0].argmax(-1)) and np.array_equal(ids[1, :, :2], got[1, :, :2].argmax(-1))
    per_conv = ev.predict_steps(model, items[::-1], batch_size=1)  # order of the input kept
    np.testing.assert_allclose(per_conv[1].probs, ref[0], atol=1e-6)
    np.testing.assert_allclose(per_conv[0].probs, ref[1, :, :2], atol=1e-6)
    assert np.array_equal(per_conv[1].ids, ids[0]) and np.array_equal(per_conv[0].ids, ids[1, :, :2])


def test_encode_many_chunks_equal_one_batch():
    """The inference chunking itself (several length-sorted chunks) reproduces the
    encoder's forward over the whole collated batch, in the input order."""
    torch.manual_seed(0)
    enc = tiny_encoder().eval()
    (tokens, wl) = tiny_batch().inputs
    utts = [tokens[i, : int(wl[i])].numpy() for i in range(len(wl))]
    with torch.no_grad():
        ref = enc((tokens, wl))
        enc.chunk_tokens = 4
        got = enc.encode_many(utts)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


def test_utterance_projection_sets_the_context_width_and_keeps_padding_out():
    torch.manual_seed(0)
    model = tiny_model(utterance_proj=4).eval()
    assert model.ec_encoder.gru.fwd.hidden_size == 4 + 3  # eq. 7 width: projection + emotion_dim
    batch = tiny_batch()
    ref = steps_of(model, batch)
    # the second dialogue alone (no padded slot) gives the same outputs as inside the batch
    tokens, wl = batch.inputs
    alone = Batch((tokens[3:], wl[3:]), batch.n_utts[1:], batch.speakers[1:, :2], batch.labels[1:, :2], [0])
    for a, b in zip(ref, steps_of(model, alone)):
        torch.testing.assert_close(a[1, :2], b[0], atol=1e-6, rtol=0)
    # trains: the projection gets gradients
    model.train()
    model(batch).loss.backward()
    assert model.project is not None and model.project.weight.grad is not None
    with pytest.raises(ConfigError, match="utterance_proj"):
        tiny_cfg(utterance_proj=-1)
