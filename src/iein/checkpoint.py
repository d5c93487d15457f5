"""Self-contained, safe checkpoints: one ``.safetensors`` file, for any model on any encoder.

The tensors are the model weights; the safetensors header metadata holds one JSON string
with everything else needed to use the model on new text: ``model_type`` and its config,
``encoder_type`` and its config, the encoder's featurizer state (e.g. the vocabulary), the
label set, embedding provenance, training-data checksums, dev/test scores and versions.
Loading parses JSON and raw tensors only; no code is ever executed (unlike pickles).

Integrity (format 2): safetensors checks the layout, not the bytes, so one flipped bit in a
weight or in the header would load silently and predict nonsense.  The header therefore
carries a second entry, ``iein_sha256``, with the sha256 of the JSON metadata string and of
every tensor's bytes; both are verified on load.

Format 1 files (IEIN with its GloVe-BiGRU encoder folded into one config, e.g. the shipped
``meld`` model) still load: :func:`_upgrade_v1` maps their header onto format 2.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from . import __version__
from .atomic import atomic_write_bytes
from .encoders.registry import get_encoder_class
from .errors import CheckpointError, ConfigError
from .models.base import ConversationModel
from .models.registry import build_model
from .utils import tensor_sha256

FORMAT = "iein-checkpoint/2"
FORMAT_V1 = "iein-checkpoint/1"
_META_KEY = "iein"
_SUM_KEY = "iein_sha256"


@dataclass
class LoadedModel:
    model: ConversationModel
    labels: tuple[str, ...]
    meta: dict[str, Any]

    @property
    def featurizer(self) -> Any:
        return self.model.utterance_encoder.featurizer

    @property
    def vocab(self) -> Any:
        """The vocabulary of a word-level encoder (None for others)."""
        return getattr(self.featurizer, "vocab", None)


def checkpoint_state(model: ConversationModel) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint stores: the model's state dict (an encoder whose weights come
    from elsewhere, e.g. a frozen or LoRA base, leaves them out of its own state dict)."""
    state = model.state_dict()
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(path: str | Path, model: ConversationModel, labels: tuple[str, ...], **meta: Any) -> Path:
    """Write ``model`` and its metadata atomically to ``path``."""
    path = Path(path)
    enc = model.utterance_encoder
    header = {
        "format": FORMAT,
        "package_version": __version__,
        "model_type": model.model_type,
        "model_config": model.config.to_dict(),
        "encoder_type": enc.encoder_type,
        "encoder_config": enc.config.portable_dict(),
        "featurizer": enc.featurizer.state(),
        "labels": list(labels),
        **meta,
    }
    state = checkpoint_state(model)
    raw = json.dumps(header)
    sums = json.dumps({"meta": hashlib.sha256(raw.encode()).hexdigest(), "tensors": tensor_sha256(state)})
    # Serialised in memory, then written by atomic_write_bytes: safetensors' own save_file
    # makes a `.tmpXXXXXX` file of its own next to the target, which a kill would strand.
    atomic_write_bytes(path, save(state, metadata={_META_KEY: raw, _SUM_KEY: sums}))
    return path


def _read_raw(path: Path) -> tuple[str, str | None]:
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted?): {exc}") from None
    raw = md.get(_META_KEY)
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without iein metadata (not an iein checkpoint)")
    return raw, md.get(_SUM_KEY)


def _upgrade_v1(meta: dict[str, Any]) -> dict[str, Any]:
    """Format 1 -> 2: IEIN's old flat config held the GloVe-BiGRU encoder's fields; the
    margin weight lambda lived in the training config.  State-dict keys are unchanged."""
    old = dict(meta.get("model_config") or {})
    enc_fields = {"vocab_size": "vocab_size", "embedding_dim": "embedding_dim", "utterance_hidden": "hidden",
                  "freeze_embeddings": "freeze_embeddings"}
    encoder = {new: old.pop(k) for k, new in enc_fields.items() if k in old}
    encoder["dropout"] = old.get("dropout", 0.1)
    old["lam"] = float((meta.get("train_config") or {}).get("lam", 5.0))
    out = dict(meta)
    out.update(format=FORMAT, format_upgraded_from=FORMAT_V1, model_type="iein", model_config=old,
               encoder_type="glove-bigru", encoder_config=encoder,
               featurizer={"vocab": meta.get("vocab", []), "max_words": 128})
    out.pop("vocab", None)
    return out


def read_metadata(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (format 1 upgraded to 2), without building the model."""
    path = Path(path)
    raw, sums = _read_raw(path)
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupted metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupted metadata (not a JSON object)")
    fmt = meta.get("format")
    if fmt == FORMAT_V1:
        return _upgrade_v1(meta)
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {fmt!r} (expected {FORMAT} or {FORMAT_V1})")
    if verify:
        expected = _sums(path, sums).get("meta")
        if hashlib.sha256(raw.encode()).hexdigest() != expected:
            raise CheckpointError(f"{path}: metadata checksum mismatch (the file is corrupted)")
    return meta


def _sums(path: Path, sums: str | None) -> dict[str, str]:
    try:
        out = json.loads(sums) if sums is not None else None
    except json.JSONDecodeError:
        out = None
    if not isinstance(out, dict):
        raise CheckpointError(f"{path}: checksums missing or corrupted (the file is corrupted)")
    return out


def load_checkpoint(path: str | Path, runtime: str = "torch") -> LoadedModel:
    """Load a checkpoint written by :func:`save_checkpoint`; errors are one line.

    ``runtime`` is how a transformer encoder computes at inference (``torch``, ``onnxruntime``,
    ``auto``: :mod:`iein.encoders.onnx_runtime`): the loader's choice, never the one recorded
    at training time, so a checkpoint loads wherever its model can run."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        labels = tuple(meta["labels"])
        encoder_config = get_encoder_class(meta["encoder_type"]).config_for_runtime(meta["encoder_config"], runtime)
        model = build_model(meta["model_type"], meta["model_config"], meta["encoder_type"],
                            encoder_config, featurizer_state=meta["featurizer"])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise CheckpointError(f"{path}: {exc}") from None
        raise CheckpointError(f"{path}: incompatible metadata: {exc}") from None
    if len(labels) != model.config.n_labels:
        raise CheckpointError(f"{path}: metadata disagrees with the model config (labels)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read weights (truncated or corrupted?): {exc}") from None
    if meta.get("format_upgraded_from") is None:
        _, sums = _read_raw(path)
        if tensor_sha256(state) != _sums(path, sums).get("tensors"):
            raise CheckpointError(f"{path}: weights checksum mismatch (the file is corrupted)")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: tensor {name!r} contains NaN or infinity")
    names = set(state)
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not match the model config: {first[0] if first else exc}") from None
    # after loading: an encoder may take tensors it holds rather than a module of its own
    # (a transformer on ONNX Runtime), and its state dict then names them
    expected = set(checkpoint_state(model))
    if names != expected:
        missing, extra = sorted(expected - names), sorted(names - expected)
        raise CheckpointError(f"{path}: weights do not match the model config (missing {missing[:3]}, "
                              f"unexpected {extra[:3]})")
    model.eval()
    # the featurizer state holds no provenance; the header's record of the pretrained
    # resources (word vectors, base model) goes back on it, so whatever reuses this featurizer
    # (a stage-2 model freezing this encoder) still says which vectors it reads
    recorded, feat = meta.get("embeddings"), model.utterance_encoder.featurizer
    if isinstance(recorded, dict):
        feat.provenance = {**recorded, **dict(getattr(feat, "provenance", None) or {})}
    return LoadedModel(model, labels, meta)
