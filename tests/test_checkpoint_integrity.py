"""Checkpoint integrity (format ``iein-checkpoint/2``): any change to the bytes of a saved
model is refused with a one-line error naming the file, and format-1 files still load.

safetensors validates the layout of a file, not its bytes, so without the sha256 entry a
flipped bit in a weight or a changed letter in the vocabulary would load silently and
predict nonsense.  The checkpoints here are tiny and untrained: no data files needed.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from iein.checkpoint import FORMAT, FORMAT_V1, load_checkpoint, read_metadata, save_checkpoint
from iein.cli import main
from iein.encoders.glove import WordFeaturizer
from iein.encoders.glove_bigru import GloveBiGRU, GloveBiGRUConfig
from iein.errors import CheckpointError
from iein.models.iein import IEIN, IEINConfig
from iein.models.registry import MODELS
from iein.recognizer import Recognizer, resolve_model
from iein.text.vocab import Vocab

LABELS = ("calm", "glad", "cross")
#: "zebra" occurs once in the file: in the vocabulary of the metadata JSON.
WORDS = ["<pad>", "<unk>", "hello", "there", "zebra", "how", "are", "you"]


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    feat = WordFeaturizer(Vocab(WORDS))
    enc = GloveBiGRU(GloveBiGRUConfig(vocab_size=len(WORDS), embedding_dim=6, hidden=4), feat)
    model = IEIN(IEINConfig(n_labels=len(LABELS), emotion_dim=3, iterations=2), enc)
    return save_checkpoint(tmp_path / "model.safetensors", model, LABELS, dataset="toy")


def tensor_region(raw: bytes) -> tuple[int, int]:
    """``[start, end)`` of the tensor bytes: a safetensors file is an 8-byte little-endian
    header length n, n bytes of JSON header, then the tensor data."""
    n = int.from_bytes(raw[:8], "little")
    return 8 + n, len(raw)


def header(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
    return load_file(str(path)), metadata


def rewrite(path: Path, out: Path, fix_checksum: bool = True, **changes) -> Path:
    """A copy of checkpoint ``path`` with its metadata JSON changed (``key=value``; None
    deletes the key), written with safetensors' own ``save_file``.  With ``fix_checksum``
    the metadata checksum is recomputed, so only the change itself can be refused."""
    tensors, metadata = header(path)
    meta = json.loads(metadata["iein"])
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    raw = json.dumps(meta)
    sums = json.loads(metadata["iein_sha256"])
    if fix_checksum:
        sums["meta"] = hashlib.sha256(raw.encode()).hexdigest()
    save_file(tensors, str(out), metadata={"iein": raw, "iein_sha256": json.dumps(sums)})
    return out


def refused(path: Path, match: str) -> str:
    """Loading ``path`` fails with one CheckpointError line naming the file and matching ``match``."""
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg, msg
    return msg


def test_an_intact_checkpoint_loads_and_round_trips(ckpt):
    # the baseline of every test below: the unmodified file loads, same weights and vocabulary
    loaded = load_checkpoint(ckpt)
    tensors, metadata = header(ckpt)
    assert loaded.labels == LABELS and loaded.vocab.to_list() == WORDS
    assert read_metadata(ckpt)["format"] == FORMAT and "iein_sha256" in metadata
    state = loaded.model.state_dict()
    assert set(state) == set(tensors) and all(torch.equal(state[k], tensors[k]) for k in tensors)
    # rewriting the header without a change keeps it loadable: the refusals below are the changes'
    assert load_checkpoint(rewrite(ckpt, ckpt.with_name("same.safetensors"))).labels == LABELS


@pytest.mark.parametrize("seed", range(6))
def test_one_flipped_bit_in_the_tensors_is_refused(ckpt, seed):
    raw = bytearray(ckpt.read_bytes())
    start, end = tensor_region(bytes(raw))
    rng = random.Random(seed)
    offset, bit = rng.randrange(start, end), rng.randrange(8)
    raw[offset] ^= 1 << bit
    bad = ckpt.with_name("flipped.safetensors")
    bad.write_bytes(bytes(raw))
    # the layout is intact: safetensors alone would load this file
    assert set(load_file(str(bad))) == set(load_file(str(ckpt)))
    refused(bad, "weights checksum mismatch")
    with pytest.raises(CheckpointError, match="checksum"):
        Recognizer.load(bad)


def test_a_changed_letter_in_the_metadata_is_refused(ckpt, tmp_path, capsys):
    raw = ckpt.read_bytes()
    assert raw.count(b"zebra") == 1 and raw.index(b"zebra") < tensor_region(raw)[0]
    bad = tmp_path / "letter.safetensors"
    bad.write_bytes(raw.replace(b"zebra", b"zebrb"))  # same length: the header stays valid JSON
    tensors, metadata = header(bad)  # ... and safetensors reads it without complaint
    assert "zebrb" in json.loads(metadata["iein"])["featurizer"]["vocab"]
    refused(bad, "metadata checksum mismatch")
    with pytest.raises(CheckpointError, match="metadata checksum mismatch"):
        read_metadata(bad)
    # the CLI says the same in one line, exit status 2
    src = tmp_path / "in.jsonl"
    src.write_text('[["A", "hello there"]]\n')
    assert main(["predict", "--model", str(bad), str(src)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(bad) in err


def test_a_changed_label_with_a_stale_checksum_is_refused(ckpt, tmp_path):
    # any metadata change, written by another tool that does not update the checksum
    bad = rewrite(ckpt, tmp_path / "labels.safetensors", fix_checksum=False, labels=["calm", "cross", "glad"])
    refused(bad, "metadata checksum mismatch")


def test_missing_or_corrupted_checksums_are_refused(ckpt, tmp_path):
    tensors, metadata = header(ckpt)
    gone = tmp_path / "nosums.safetensors"
    save_file(tensors, str(gone), metadata={"iein": metadata["iein"]})
    refused(gone, "checksums missing or corrupted")
    garbled = tmp_path / "garbled.safetensors"
    save_file(tensors, str(garbled), metadata={"iein": metadata["iein"], "iein_sha256": "{not json"})
    refused(garbled, "checksums missing or corrupted")


@pytest.mark.parametrize("where", ["header_length", "header", "tensors", "last_byte", "empty"])
def test_a_truncated_file_is_refused(ckpt, where):
    raw = ckpt.read_bytes()
    start, end = tensor_region(raw)
    cut = {"header_length": 5, "header": start // 2, "tensors": (start + end) // 2, "last_byte": end - 1,
           "empty": 0}[where]
    bad = ckpt.with_name(f"cut-{where}.safetensors")
    bad.write_bytes(raw[:cut])
    refused(bad, "corrupted|truncated")


def test_a_nan_tensor_is_refused(tmp_path):
    torch.manual_seed(0)
    enc = GloveBiGRU(GloveBiGRUConfig(vocab_size=len(WORDS), embedding_dim=6, hidden=4), WordFeaturizer(Vocab(WORDS)))
    model = IEIN(IEINConfig(n_labels=len(LABELS), emotion_dim=3), enc)
    with torch.no_grad():
        model.initial_classifier.weight[1, 2] = float("nan")
    path = save_checkpoint(tmp_path / "nan.safetensors", model, LABELS)  # checksums are right
    refused(path, "'initial_classifier.weight' contains NaN or infinity")
    with torch.no_grad():
        model.initial_classifier.weight[1, 2] = float("inf")
    refused(save_checkpoint(path, model, LABELS), "NaN or infinity")


def test_an_unknown_model_type_lists_the_choices(ckpt, tmp_path):
    bad = rewrite(ckpt, tmp_path / "arch.safetensors", model_type="transformer-xl")
    assert read_metadata(bad)["model_type"] == "transformer-xl"  # the checksum is right ...
    msg = refused(bad, "unknown model 'transformer-xl'")  # ... the model type is not
    assert "choices:" in msg and all(name in msg for name in MODELS)
    bad = rewrite(ckpt, tmp_path / "enc.safetensors", encoder_type="elmo")
    assert "unknown encoder 'elmo' (choices: " in refused(bad, "elmo")


def test_other_metadata_errors_are_one_line(ckpt, tmp_path):
    refused(rewrite(ckpt, tmp_path / "fmt.safetensors", format="iein-checkpoint/9"),
            "unsupported checkpoint format 'iein-checkpoint/9'")
    refused(rewrite(ckpt, tmp_path / "labels.safetensors", labels=["calm", "glad"]), "labels")
    refused(rewrite(ckpt, tmp_path / "nolabels.safetensors", labels=None), "incompatible metadata")
    refused(rewrite(ckpt, tmp_path / "cfg.safetensors", model_config={"n_labels": 3, "bogus": 1}), "bogus")
    tensors, _ = header(ckpt)
    plain = tmp_path / "plain.safetensors"
    save_file(tensors, str(plain))
    refused(plain, "not an iein checkpoint")
    fewer = tmp_path / "fewer.safetensors"
    _, metadata = header(ckpt)
    del tensors["initial_classifier.bias"]
    save_file(tensors, str(fewer), metadata=metadata)  # the weights checksum catches it first
    refused(fewer, "checksum mismatch")


# --- format 1: the shipped `meld` model -----------------------------------------------------

def test_the_shipped_format_1_model_is_upgraded_on_read():
    path = resolve_model("meld")
    _, metadata = header(path)
    v1 = json.loads(metadata["iein"])
    assert v1["format"] == FORMAT_V1 and "iein_sha256" not in metadata  # still the old file
    meta = read_metadata(path)
    assert meta["format"] == FORMAT and meta["format_upgraded_from"] == FORMAT_V1
    assert (meta["model_type"], meta["encoder_type"]) == ("iein", "glove-bigru")
    # the encoder's fields left IEIN's config; lambda moved from the training config
    old = v1["model_config"]
    assert meta["encoder_config"]["hidden"] == old["utterance_hidden"] == 100
    assert (meta["encoder_config"]["vocab_size"], meta["encoder_config"]["embedding_dim"]) == \
        (old["vocab_size"], old["embedding_dim"])
    assert not {"utterance_hidden", "vocab_size", "embedding_dim", "freeze_embeddings"} & set(meta["model_config"])
    assert meta["model_config"]["lam"] == v1["train_config"]["lam"] == 5.0
    assert meta["featurizer"]["vocab"] == v1["vocab"] and "vocab" not in meta
    assert meta["labels"] == v1["labels"] and meta["best_epoch"] == v1["best_epoch"]


def test_the_shipped_format_1_model_loads_with_its_weights():
    path = resolve_model("meld")
    tensors, _ = header(path)
    loaded = load_checkpoint(path)
    model = loaded.model
    assert isinstance(model, IEIN) and isinstance(model.utterance_encoder, GloveBiGRU)
    assert model.ec_encoder.gru.hidden_size == 232 and model.n_steps == 3  # MELD: 2 * 100 + 32, T = 2
    assert model.config.feedback_dropout == 0.3 and loaded.meta["format_upgraded_from"] == FORMAT_V1
    state = model.state_dict()
    assert set(state) == set(tensors) and all(torch.equal(state[k], tensors[k]) for k in tensors)
    assert len(loaded.vocab) == tensors["utterance_encoder.embedding.weight"].shape[0]
    assert not model.training
