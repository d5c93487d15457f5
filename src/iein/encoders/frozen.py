"""A trained utterance encoder, taken from a checkpoint and frozen: stage 2 of two-stage training.

The baselines' papers (cLSTM, DialogueRNN, DialogueGCN) and the strong ERC systems (COSMIC,
DAG-ERC) all train in two stages: first an utterance classifier (``--arch cnn``: the encoder
plus a linear layer, no context), selected on dev; then a context model on the *fixed*
utterance vectors of that encoder.  DialogueRNN and DialogueGCN need it here: trained end to end
from scratch, their recurrences and graph average a dialogue's states and the CNN under them
never leaves the majority-class plateau (``docs/results.md``).

``iein train --encoder-from STAGE1.safetensors --arch dialoguernn ...`` builds this encoder:

* at training time the stage-1 encoder (any type: ``glove-cnn``, ``glove-bigru``, a LoRA or
  fine-tuned ``transformer``) turns every utterance into a vector **once**, so an epoch costs
  only the context model;
* the checkpoint stores the stage-1 encoder's type, config, featurizer and weights inside this
  one (for a LoRA transformer that is only its adapters), so it is as self-contained as any
  other: ``iein predict`` computes the vectors of new text with the same frozen weights.

The stage-1 file is read by the training layer (this layer must not import checkpoints); it
arrives here as the ``load_encoder`` option of :meth:`FrozenEncoder.build_featurizer`.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from torch import Tensor

from ..data.conversation import Conversation
from ..errors import ConfigError
from ..utils import sha256_file
from .base import EncoderConfig, Featurizer, Log, UtteranceEncoder, stack_vectors
from .cache import FeatureCache, cache_root, regroup, vectors_once
from .registry import get_encoder_class


@dataclasses.dataclass
class FrozenEncoderConfig(EncoderConfig):
    section: ClassVar[str] = "encoder frozen"
    #: Dropout on the frozen vectors is the context model's (``model.dropout``); none here.
    dropout: float = 0.0
    checkpoint: str = ""  # the stage-1 checkpoint (read at training time only)
    # derived from the stage-1 checkpoint by build_featurizer, recorded for checkpoints
    inner_type: str = ""
    inner_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    checkpoint_sha256: str = ""
    output_size: int = 0


class FrozenFeaturizer(Featurizer):
    """The stage-1 featurizer followed by the stage-1 encoder: conversations -> vectors.

    ``module`` is the frozen stage-1 encoder that computes the vectors (the one read from the
    stage-1 file while training, the model's own copy once a checkpoint is loaded)."""

    def __init__(self, inner: Featurizer, module: UtteranceEncoder | None = None, source: str = "",
                 sha256: str = "") -> None:
        self.inner = inner
        self.module = module
        self.provenance = {**dict(getattr(inner, "provenance", {})), "stage1_checkpoint": source,
                           "stage1_sha256": sha256}
        self.coverage = dict(getattr(inner, "coverage", {}))

    def _encode(self, features: list[Any], progress: bool) -> np.ndarray:
        if self.module is None:
            raise ConfigError("frozen encoder: no stage-1 weights attached to the featurizer")
        from tqdm import tqdm

        module = self.module.eval()
        chunk = 4096  # utterances per progress step; encode_many bounds memory inside it
        out = []
        with torch.inference_mode(), tqdm(total=len(features), unit="utt", file=sys.stderr, leave=False,
                                          disable=None if progress else True, desc="stage-1 vectors") as bar:
            for s in range(0, len(features), chunk):
                out.append(module.encode_many(features[s: s + chunk]).float().cpu().numpy())
                bar.update(min(chunk, len(features) - s))
        return np.concatenate(out) if out else np.zeros((0, self.module.output_dim), np.float32)

    def _vectors(self, feats: list[list[Any]], cache: FeatureCache | None, progress: bool,
                 log: Log | None = None) -> list[list[np.ndarray]]:
        """Vectors of the stage-1 features, each distinct input encoded once ("Yeah." and
        "Okay." recur in every MELD scene), through ``cache`` when given."""
        flat = [np.ascontiguousarray(f) for c in feats for f in c]
        rows, counts = vectors_once([f.dtype.str.encode() + f.tobytes() for f in flat],
                                    lambda idx: self._encode([flat[i] for i in idx], progress), cache)
        if log is not None and flat:
            log(f"stage-1 vectors: {len(flat)} utterances, {counts['cached']} distinct cached, "
                f"{counts['computed']} computed" + (f" (cache {cache.dir})" if cache else ""))
        return regroup(rows, feats)

    def featurize(self, conv: Conversation) -> list[np.ndarray]:
        return self._vectors([self.inner.featurize(conv)], None, progress=False)[0]

    @property
    def context_window(self) -> tuple[int, int]:
        return self.inner.context_window

    def featurize_many(self, convs: Sequence[Conversation], log: Log | None = None) -> list[list[np.ndarray]]:
        """Training: vectors of a split, read from and written to the feature cache (a
        stage-1 transformer takes minutes per corpus on a CPU; every seed of a stage 2 would
        recompute the same numbers).  The namespace is the stage-1 file's hash, the payload the
        stage-1 features, so another stage 1 or changed text is another key."""
        feats = self.inner.featurize_many(convs, log=log)
        sha = self.provenance.get("stage1_sha256")
        cache = None
        if sha and self.module is not None:
            cache = FeatureCache(cache_root() / "features", {"kind": "frozen-stage1", "stage1_sha256": sha,
                                                             "inner": self.inner.key()}, self.module.output_dim)
        return self._vectors(feats, cache, progress=True, log=log)

    def featurize_batch(self, convs: Sequence[Conversation]) -> list[list[np.ndarray]]:
        return self._vectors(self.inner.featurize_batch(convs), None, progress=False)

    def release(self) -> None:
        self.inner.release()

    def state(self) -> dict[str, Any]:
        return {"inner": self.inner.state()}

    @classmethod
    def from_state(cls, state: dict[str, Any], config: EncoderConfig) -> "FrozenFeaturizer":
        assert isinstance(config, FrozenEncoderConfig)
        inner_cls = get_encoder_class(config.inner_type)
        inner_cfg = inner_cls.config_class.from_dict(config.inner_config)
        return cls(inner_cls.featurizer_from_state(state["inner"], inner_cfg),
                   source=Path(config.checkpoint).name, sha256=config.checkpoint_sha256)

    def key(self) -> str:
        sha = self.provenance.get("stage1_sha256", "")
        return f"frozen/{sha[:16]}/{self.inner.key()}"


class FrozenEncoder(UtteranceEncoder):
    """Fixed utterance vectors of a stage-1 encoder (``output_dim`` = the stage-1 encoder's).

    Holds the stage-1 encoder as ``inner`` with ``requires_grad`` off and always in eval mode
    (no dropout: the same text always gives the same vector, as in the precomputed features
    the baselines' papers used); the batches carry the vectors, so ``forward`` is the identity.
    """

    encoder_type = "frozen"
    config_class = FrozenEncoderConfig
    config: FrozenEncoderConfig
    featurizer: FrozenFeaturizer

    def __init__(self, config: FrozenEncoderConfig, featurizer: Featurizer) -> None:
        super().__init__(config, featurizer)
        assert isinstance(featurizer, FrozenFeaturizer)
        inner_cls = get_encoder_class(config.inner_type)
        self.inner = inner_cls.for_inference(inner_cls.config_class.from_dict(config.inner_config), featurizer.inner)
        self.inner.requires_grad_(False)
        if featurizer.module is None:  # a loaded checkpoint: its weights arrive in this module
            featurizer.module = self.inner

    def init_pretrained(self) -> None:
        """Copy the stage-1 weights (read while training) into this model's copy."""
        source = self.featurizer.module
        if source is not None and source is not self.inner:
            self.inner.load_state_dict(source.state_dict())
        self.featurizer.module = self.inner

    def train(self, mode: bool = True) -> "FrozenEncoder":
        super().train(mode)
        self.inner.eval()  # frozen means no dropout either
        return self

    @property
    def output_dim(self) -> int:
        return self.config.output_size or self.inner.output_dim

    @classmethod
    def build_featurizer(cls, config: EncoderConfig, train: Sequence[Conversation], log: Log,
                         load_encoder: Callable[[Path], UtteranceEncoder] | None = None,
                         **_: Any) -> tuple[Featurizer, dict[str, Any]]:
        assert isinstance(config, FrozenEncoderConfig)
        if not config.checkpoint:
            raise ConfigError("encoder 'frozen' needs the stage-1 checkpoint: --encoder-from FILE "
                              "(a model trained with --arch cnn on the encoder to freeze)")
        path = Path(config.checkpoint)
        if not path.is_file():
            raise ConfigError(f"--encoder-from: {path} is not a file")
        if load_encoder is None:
            raise ConfigError("encoder 'frozen' is built by the trainer (it reads the stage-1 checkpoint)")
        source = load_encoder(path)
        if isinstance(source, FrozenEncoder):
            source = source.inner  # a stage-2 model's encoder is the same stage-1 encoder
        source.requires_grad_(False).eval()
        sha = sha256_file(path)
        feat = FrozenFeaturizer(source.featurizer, module=source, source=path.name, sha256=sha)
        changes = {"inner_type": source.encoder_type, "inner_config": source.config.to_dict(),
                   "checkpoint_sha256": sha, "output_size": source.output_dim}
        log(f"frozen {source.encoder_type} encoder from {path} ({source.output_dim}d vectors, sha256 {sha[:12]}...): "
            "computed once, the context model trains on them")
        return feat, changes

    @classmethod
    def featurizer_from_state(cls, state: dict[str, Any], config: EncoderConfig) -> Featurizer:
        return FrozenFeaturizer.from_state(state, config)

    @classmethod
    def config_for_runtime(cls, config: dict[str, Any], runtime: str) -> dict[str, Any]:
        inner = get_encoder_class(str(config.get("inner_type", "")))
        return {**config, "inner_config": inner.config_for_runtime(dict(config.get("inner_config") or {}), runtime)}

    def collate(self, features: Sequence[np.ndarray]) -> Tensor:
        return stack_vectors(features, self.output_dim)

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs.to(self.device)

    def param_groups(self, weight_decay: float, embedding_weight_decay: float) -> list[dict[str, Any]]:
        return []  # nothing to train


