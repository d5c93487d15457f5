"""Self-contained, safe checkpoints: one ``.safetensors`` file.

The tensors are the model weights; the safetensors header metadata holds one JSON string
with everything else needed to use the model on new text: model config, vocabulary, label
set, embedding provenance, training-data checksums, dev/test scores and package version.
Loading parses JSON and raw tensors only; no code is ever executed (unlike pickles).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import CheckpointError, ConfigError
from .models.iein import IEIN, IEINConfig
from .text.vocab import Vocab
from .utils import atomic_path

FORMAT = "iein-checkpoint/1"


@dataclass
class LoadedModel:
    model: IEIN
    vocab: Vocab
    labels: tuple[str, ...]
    meta: dict[str, Any]


def save_checkpoint(path: str | Path, model: IEIN, vocab: Vocab, labels: tuple[str, ...], **meta: Any) -> Path:
    """Write ``model`` and its metadata atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "format": FORMAT,
        "package_version": __version__,
        "model_config": model.config.to_dict(),
        "labels": list(labels),
        "vocab": vocab.to_list(),
        **meta,
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"iein": json.dumps(header)})
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, without building the model."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("iein")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted?): {exc}") from None
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without iein metadata (not an iein checkpoint)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupted metadata: {exc}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format')!r} (expected {FORMAT})")
    return meta


def load_checkpoint(path: str | Path) -> LoadedModel:
    """Load a checkpoint written by :func:`save_checkpoint`; errors are one line."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        cfg = IEINConfig.from_dict(meta["model_config"])
        vocab = Vocab.from_list(meta["vocab"])
        labels = tuple(meta["labels"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: incompatible metadata: {exc}") from None
    if len(labels) != cfg.n_labels or len(vocab) != cfg.vocab_size:
        raise CheckpointError(f"{path}: metadata disagrees with the model config (labels/vocabulary size)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read weights (truncated or corrupted?): {exc}") from None
    model = IEIN(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not match the model config: {first[0] if first else exc}") from None
    for name, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: tensor {name!r} contains NaN or infinity")
    model.eval()
    return LoadedModel(model, vocab, labels, meta)
