"""What the transformer featurizer and the transformer encoder module both build on.

The encoder config (the featurizer reads its input settings, feature cache and runtime from
it; the module its modes and learning rates), loading the base model, reading and pooling its
last hidden states, and padding utterance features into model input.  Kept apart from both
users so that :mod:`iein.encoders.transformer_featurizer` and :mod:`iein.encoders.transformer`
share one definition without importing each other.  The modes, pooling and layer mix are
described in :mod:`iein.encoders.transformer`.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .base import EncoderConfig
from .cache import cache_root
from .onnx_runtime import RUNTIMES, export_key, resolve_runtime

MODES = ("frozen", "finetune", "lora")
POOLINGS = ("mean", "cls", "target")
#: Default learning rate of the transformer weights, by mode (see :mod:`iein.encoders.transformer`).
DEFAULT_ENCODER_LR = {"finetune": 2e-5, "lora": 1e-4}


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' per-load progress bar (restored after)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_base_model(model_dir: Path) -> nn.Module:
    """The pretrained model (float32, eval mode, offline) without its unused pooler head.

    A folder whose weight files lack some of the model's weights is an error: they would be
    randomly initialised and every feature silently meaningless.
    """
    from transformers import AutoModel

    with _quiet_loading():
        model, info = AutoModel.from_pretrained(str(model_dir), local_files_only=True, output_loading_info=True)
    missing = [k for k in info.get("missing_keys", ()) if not k.startswith("pooler.")]
    if missing:
        raise ConfigError(f"{model_dir}: weights missing for {len(missing)} parameters "
                          f"({', '.join(sorted(missing)[:3])}, ...)")
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # BERT's NSP head: unused, and DDP rejects parameters without grads
    # float32 whatever the checkpoint's dtype (transformers 5 loads it as stored)
    return model.float().eval()


def pool(hidden: Tensor, mask: Tensor, pooling: str) -> Tensor:
    """``hidden (n, L, d)``, ``mask (n, L)`` -> ``(n, d)``: the first token (``cls``), else the
    mean over the tokens ``mask`` marks (every real token for ``mean``, the target's for
    ``target``: :func:`pad_ids` returns the mask that fits the pooling)."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


# --------------------------------------------------------------------------------------------
# config


@dataclasses.dataclass
class TransformerEncoderConfig(EncoderConfig):
    section: ClassVar[str] = "encoder transformer"
    #: Extra dropout on the pooled vector.  Off by default: the context model already
    #: drops utterance vectors, and the transformer has its own internal dropout.
    dropout: float = 0.0
    model: str = "minilm"  # 'minilm', 'mpnet' or a local Hugging Face folder
    pooling: str = "mean"  # 'mean' | 'cls'
    mode: str = "frozen"  # 'frozen' | 'finetune' | 'lora'
    #: Tokens per input, special tokens included.  The longest utterance has 93 MiniLM
    #: tokens in MELD, 124 in IEMOCAP (99th percentiles 36 and 62); context windows are
    #: cut to fit before the target is.
    max_tokens: int = 128
    layers: int = 1  # the last k hidden states, mixed with learned weights (see iein.encoders.transformer)
    speaker_names: bool = False  # "Joey: ..." (EmoBERTa)
    window_past: int = 0  # previous utterances in the input (EmoBERTa)
    window_future: int = 0  # following utterances in the input
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_targets: list[str] = dataclasses.field(default_factory=list)  # empty: query/value, detected
    encoder_lr: float | None = None  # None: 2e-5 finetune, 1e-4 lora
    batch_size: int = 64  # utterances per forward when extracting / running the encoder
    #: What runs the transformer: 'torch' (exact), 'onnxruntime', 'onnxruntime-int8' or 'auto' (see
    #: :mod:`iein.encoders.onnx_runtime`): for frozen vectors, and for a trained encoder built
    #: for inference.  A loaded checkpoint takes its loader's choice, not the recorded one.
    runtime: str = "torch"
    cache_dir: str = ""  # feature cache; empty: $IEIN_CACHE_DIR/features or ~/.cache/iein/features
    machine_fields: ClassVar[tuple[str, ...]] = ("cache_dir",)
    save_full_weights: bool = False  # finetune only: accept checkpoints with all base weights
    #: A hub model's commit (or a branch/tag to pin before training); training records the
    #: commit the download resolved to, and a checkpoint reloads exactly that one.
    revision: str = ""
    # derived from the base model by build_featurizer, recorded for checkpoints
    hidden_size: int = 0
    base_sha256: str = ""

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ConfigError:
            return ConfigError(f"{self.section} config field {field!r} {why}")

        if self.mode not in MODES:
            raise bad("mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.pooling not in POOLINGS:
            raise bad("pooling", f"must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if not isinstance(self.model, str) or not self.model:
            raise bad("model", "must name 'minilm', 'mpnet' or a local Hugging Face folder")
        if self.max_tokens < 8:
            raise bad("max_tokens", "must be >= 8")
        if isinstance(self.layers, bool) or not isinstance(self.layers, int) or self.layers < 1:
            raise bad("layers", f"must be a whole number >= 1, got {self.layers!r}")
        for name in ("window_past", "window_future"):
            size = getattr(self, name)
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise bad(name, f"must be a whole number >= 0, got {size!r}")
            if size > self.max_tokens:  # each context utterance takes at least one token
                raise bad(name, f"= {size} can never be filled: the whole input holds max_tokens = "
                                f"{self.max_tokens} tokens")
        if self.lora_r < 1 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise bad("lora_r/lora_alpha/lora_dropout", "must be >= 1, > 0 and in [0, 1)")
        if self.encoder_lr is not None and not self.encoder_lr > 0:
            raise bad("encoder_lr", "must be > 0")
        if self.batch_size < 1:
            raise bad("batch_size", "must be >= 1")
        if self.runtime not in RUNTIMES:
            raise bad("runtime", f"must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if not 0 <= self.dropout < 1:
            raise bad("dropout", "must be in [0, 1)")
        if self.mode == "finetune" and not self.save_full_weights:
            raise ConfigError(f"{self.section}: mode 'finetune' trains every weight of the base model, so each "
                              "checkpoint holds all of them (90 MB for minilm, 438 MB for mpnet): set "
                              "save_full_weights=true to accept that, or use mode 'lora' (small checkpoints)")
        self.lora_targets = [str(t) for t in self.lora_targets]

    @property
    def learning_rate(self) -> float:
        """Learning rate of the transformer's trainable weights."""
        return self.encoder_lr if self.encoder_lr is not None else DEFAULT_ENCODER_LR.get(self.mode, 0.0)

    @property
    def feature_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else cache_root() / "features"

    def resolved_runtime(self, device: torch.device | None = None) -> str:
        """``runtime`` with ``auto`` resolved; ``torch`` off the CPU (ONNX Runtime runs on the CPU)."""
        if device is not None and device.type != "cpu":
            return "torch"
        return resolve_runtime(self.runtime, f"{self.section} config field 'runtime'")

    def input_settings(self) -> dict[str, Any]:
        """What decides the model input of an utterance besides its conversation."""
        return {"speaker_names": self.speaker_names, "window_past": self.window_past,
                "window_future": self.window_future, "max_tokens": self.max_tokens}


def last_hidden_states(model: nn.Module, ids: Tensor, mask: Tensor, k: int) -> tuple[Tensor, ...]:
    """The last ``k`` hidden states ``(n, L, d)`` of ``model``, the output last; all hidden
    states are asked for only when ``k > 1``."""
    if k == 1:
        return (model(input_ids=ids, attention_mask=mask).last_hidden_state,)
    return tuple(model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-k:])


class StackedStates(nn.Module):
    """``(ids, mask) -> (n, L, k, d)``: the last ``k`` hidden states of ``model`` side by side,
    the function an ONNX export computes."""

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.model, self.k = model, k

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return torch.stack(last_hidden_states(self.model, ids, mask, self.k), dim=2)



def token_ids(item: np.ndarray) -> np.ndarray:
    """The token ids of one utterance's features (row 0 of a ``target``-pooling item)."""
    return item[0] if item.ndim == 2 else item


def pad_ids(features: Sequence[np.ndarray], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Utterance features -> right-padded ``input_ids (n, L)``, ``attention_mask (n, L)`` and
    the pooling mask ``(n, L)``: the target's tokens for ``target``-pooling items (two rows),
    else the attention mask itself."""
    lengths = np.fromiter((f.shape[-1] for f in features), dtype=np.int64, count=len(features))
    width = int(lengths.max()) if len(features) else 1
    ids = np.full((len(features), width), pad_id, dtype=np.int64)
    mask = np.arange(width)[None, :] < lengths[:, None]
    attention = torch.from_numpy(mask.astype(np.int64))
    if not len(features):
        return torch.from_numpy(ids), attention, attention
    ids[mask] = np.concatenate([token_ids(f) for f in features])
    if features[0].ndim == 1:
        return torch.from_numpy(ids), attention, attention
    target = np.zeros((len(features), width), dtype=np.int64)
    target[mask] = np.concatenate([f[1] for f in features])
    return torch.from_numpy(ids), attention, torch.from_numpy(target)


# --------------------------------------------------------------------------------------------
# the module


def states_export_key(base_sha256: str, layers: int, weights: str = "", **shape: Any) -> str:
    """The ONNX export key of a transformer's last ``layers`` hidden states: its base weights,
    the hash of the tensors training changed (none for the base itself) and whatever else
    shapes the graph (``mode``).  The base model's featurizer and a trained encoder both ask
    here, so their exports can never be confused."""
    return export_key(kind="transformer-states", base_sha256=base_sha256, weights=weights, layers=layers, **shape)
