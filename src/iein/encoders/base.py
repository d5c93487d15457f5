"""The utterance-encoder contract: text of a conversation -> one vector per utterance.

An encoder has two halves, because they live at different times:

* a :class:`Featurizer` turns conversations into per-utterance *features* once per corpus
  (tokenise + vocabulary lookup for GloVe; the input text with its context window, or a
  cached vector, for a transformer).  It is data, not weights: seed-independent, built from
  the training split only, and saved in the checkpoint header as JSON (:meth:`state`);
* an :class:`UtteranceEncoder` ``nn.Module`` turns a collated list of features into
  ``(n_utterances, output_dim)``; its weights are part of the model's state dict.

Context models see only ``output_dim`` and the vectors, so every model runs on every
encoder (allennlp's ``Seq2VecEncoder.get_output_dim`` contract).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import Tensor, nn

from ..configuration import Config
from ..data.conversation import Conversation

Log = Callable[[str], None]


@dataclasses.dataclass
class EncoderConfig(Config):
    section: ClassVar[str] = "encoder"
    #: Fields that hold a path of this machine (a cache folder), not part of the model: a
    #: checkpoint stores them blank (:meth:`portable_dict`).
    machine_fields: ClassVar[tuple[str, ...]] = ()
    dropout: float = 0.1  # on the encoder's input (word embeddings) during training

    def portable_dict(self) -> dict[str, Any]:
        """The config as a checkpoint stores it: :attr:`machine_fields` blank."""
        return {k: ("" if k in self.machine_fields else v) for k, v in self.to_dict().items()}


def stack_vectors(features: Sequence[Any], dim: int) -> Tensor:
    """Collate of encoders whose features are already vectors: ``(n, dim)`` float32."""
    import numpy as np

    if not len(features):
        return torch.zeros(0, dim)
    return torch.from_numpy(np.stack(features).astype(np.float32, copy=False))


class Featurizer:
    """Conversations -> per-utterance features; JSON-serialisable (no pickles)."""

    #: Everything derived from pretrained resources for reporting (vector file name, ...).
    provenance: dict[str, Any]
    #: How well the training text is covered by the featurizer (vocabulary coverage).
    coverage: dict[str, Any]

    def featurize(self, conv: Conversation) -> list[Any]:
        raise NotImplementedError

    @property
    def context_window(self) -> tuple[int, int]:
        """How many utterances before and after an utterance its features read (a
        transformer's context window); (0, 0): the utterance alone.  A live model needs 0
        after, and streams by featurizing the newest utterance with its past window."""
        return 0, 0

    def featurize_many(self, convs: Sequence[Conversation], log: Log | None = None) -> list[list[Any]]:
        """All conversations of a split (an encoder may batch or cache across them)."""
        return [self.featurize(c) for c in convs]

    def featurize_batch(self, convs: Sequence[Conversation]) -> list[list[Any]]:
        """The prediction path: like :meth:`featurize` (no disk cache, nothing logged), for a
        batch of conversations that an encoder may process together."""
        return [self.featurize(c) for c in convs]

    def release(self) -> None:
        """Free what featurizing needed and training does not (a frozen transformer's base
        model); called once a corpus is featurized.  Nothing to free by default."""

    def state(self) -> dict[str, Any]:
        """JSON state stored in the checkpoint header; :meth:`from_state` rebuilds it."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, Any], config: EncoderConfig) -> "Featurizer":
        raise NotImplementedError

    def key(self) -> str:
        """Identity of the features it produces: prepared corpora are shared between
        encoders with equal keys (glove-bigru and glove-cnn read the same token ids)."""
        raise NotImplementedError


class UtteranceEncoder(nn.Module):
    """Base class of utterance encoders.  Subclasses set ``encoder_type`` and
    ``config_class`` and implement ``output_dim``, ``collate``, ``forward`` and
    ``build_featurizer``."""

    encoder_type: ClassVar[str]
    config_class: ClassVar[type[EncoderConfig]]
    #: Max utterances per :meth:`encode_many` chunk (inference memory bound).
    chunk_utterances: ClassVar[int] = 512

    def __init__(self, config: EncoderConfig, featurizer: Featurizer) -> None:
        super().__init__()
        self.config = config
        # a plain attribute, not a submodule: the featurizer holds no weights
        self.__dict__["featurizer"] = featurizer
        # follows .to(device) even when the encoder has no weights (frozen vectors): see `device`
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    @property
    def output_dim(self) -> int:
        raise NotImplementedError

    @classmethod
    def for_inference(cls, config: EncoderConfig, featurizer: Featurizer) -> "UtteranceEncoder":
        """An encoder that will never train (e.g. the frozen stage 1 inside a two-stage model):
        an encoder may then drop training-only structure (a transformer merges its LoRA
        adapters and needs no ``peft``).  Its state dict is the same as the trainable one's."""
        return cls(config, featurizer)

    @classmethod
    def config_for_runtime(cls, config: dict[str, Any], runtime: str) -> dict[str, Any]:
        """``config`` (a checkpoint's encoder config) set to compute with the inference runtime a
        loader asks for (:mod:`iein.encoders.onnx_runtime`); an encoder without that choice
        returns it unchanged."""
        return config

    @classmethod
    def build_featurizer(cls, config: EncoderConfig, train: Sequence[Conversation], log: Log,
                         **options: Any) -> tuple[Featurizer, dict[str, Any]]:
        """Build the featurizer from the *training* conversations only; returns it with the
        config fields the data decides (vocabulary size, vector dimension), which override
        the user's.  ``options`` carry resources outside the config (``vectors``: a word-vector
        file)."""
        raise NotImplementedError

    @classmethod
    def features_key(cls, config: dict[str, Any]) -> str:
        """Which prepared features this encoder reads, from its config overrides: encoders with
        equal keys share one featurized corpus (the trainer checks it, reproduce caches by it).
        Default: the encoder and every setting."""
        import json

        return f"{cls.encoder_type}:{json.dumps(config, sort_keys=True)}"

    @classmethod
    def featurizer_from_state(cls, state: dict[str, Any], config: EncoderConfig) -> Featurizer:
        """Rebuild the featurizer saved in a checkpoint header."""
        raise NotImplementedError

    def init_pretrained(self) -> None:
        """Copy pretrained weights held by the featurizer (e.g. the GloVe matrix) into the
        module.  Called when a model is built for training, not when a checkpoint is loaded."""

    def collate(self, features: Sequence[Any]) -> Any:
        raise NotImplementedError

    def forward(self, inputs: Any) -> Tensor:  # (n_utterances, output_dim)
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def encode_many(self, features: Sequence[Any]) -> Tensor:
        """Inference over any number of utterances in bounded chunks; ``(n, output_dim)``."""
        from ..data.batching import to_device

        parts = [self(to_device(self.collate(features[s: s + self.chunk_utterances]), self.device))
                 for s in range(0, len(features), self.chunk_utterances)]
        return torch.cat(parts) if parts else torch.zeros(0, self.output_dim, device=self.device)

    def param_groups(self, weight_decay: float, embedding_weight_decay: float) -> list[dict[str, Any]]:
        """Optimiser groups of the encoder's trainable weights (an encoder with embeddings
        gives them their own weight decay)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": weight_decay}] if params else []
