"""The transformer encoder's featurizer: conversations -> model input or frozen vectors.

Tokenises each utterance with its context window and the tokenizer's own pair template
(token ids for ``finetune``/``lora``), and for ``frozen`` runs the base model once per corpus
and keeps the pooled vectors in the content-addressed feature cache.  Apart from the torch
module (:mod:`iein.encoders.transformer`) because it is a job of its own: it runs before
training, once per corpus, and a frozen encoder needs nothing else of the base model.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..data.conversation import Conversation, Utterance
from ..errors import CheckpointError, ConfigError
from .base import EncoderConfig, Featurizer, Log
from .base_models import PACKAGED_MODELS, require, resolve_model, source_of, tokenizer_sha256, weights_sha256
from .cache import FeatureCache, regroup, vectors_once
from .hf_tokenizer import Tokenizer, load_tokenizer, read_model_config
from .onnx_runtime import ONNX_RUNTIMES, OnnxForward, onnx_forward
from .transformer_parts import (StackedStates, TransformerEncoderConfig, last_hidden_states, load_base_model,
                                pad_ids, pool, states_export_key)

#: Everyday lines of varied length and feeling: the inputs an int8 graph is checked on.
PROBE = Conversation("probe", [Utterance(s, t) for s, t in (
    ("Ann", "Oh my God, I can't believe you actually came!"), ("Bob", "Of course I did."),
    ("Ann", "I was so worried you'd be angry with me after what happened last week."),
    ("Bob", "Angry? No. Hurt, maybe, a little."), ("Ann", "Okay."),
    ("Bob", "Let's just forget about it and get something to eat, I'm starving."))])


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
        """Token ids of every utterance's model input (see :mod:`iein.encoders.transformer`)."""
        return self.build_with_stats(convs)[0]

    def build_with_stats(self, convs: Sequence[Conversation]) -> tuple[list[list[np.ndarray]], dict[str, Any]]:
        """:meth:`build_inputs` and what building them found (unknown and truncated inputs), for
        the training log."""
        cfg = self.config
        texts = [t for c in convs for t in self._texts(c)]
        tokens = self.tokenizer.encode_many(texts)  # one batched call of the Rust tokenizer for the split
        budget = cfg.max_tokens - len(self.prefix) - len(self.suffix)
        unk = self.tokenizer.unk_token_id
        out: list[list[np.ndarray]] = []
        stats = {"utterances": len(texts), "tokens": sum(map(len, tokens)), "unk": 0, "truncated_targets": 0,
                 "cut_context": 0}
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
                stats["cut_context"] += self._window_tokens(utts, i) > sum(map(len, past + future))
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

    def _window_tokens(self, utts: list[list[int]], i: int) -> int:
        """Tokens of the context window around utterance ``i`` before any truncation."""
        lo, hi = max(0, i - self.config.window_past), min(len(utts), i + 1 + self.config.window_future)
        return sum(len(u) for u in utts[lo:hi]) - len(utts[i])

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
        namespace.update(self.layers_tag())
        runtime = self.runtime()
        if runtime != "torch":  # the exact path keeps its namespace; another path is recorded
            namespace["runtime"] = runtime
        return FeatureCache(self.config.feature_cache_dir, namespace, self.vector_size)

    def layers_tag(self) -> dict[str, int]:
        """How the layer count enters cache names: not at all for one layer, so the vectors
        cached before layer mixes existed keep their names."""
        return {"layers": self.config.layers} if self.config.layers > 1 else {}

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
            key = states_export_key(self.base_sha256, self.config.layers)
            probe = self.probe_inputs() if self.runtime() == "onnxruntime-int8" else None
            self._onnx = onnx_forward(key, lambda: StackedStates(load_base_model(self.model_dir), self.config.layers),
                                      probe=probe)
        return self._onnx

    def probe_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` of a short everyday dialogue as this featurizer builds
        model inputs: what an int8 graph is checked on against the float32 one."""
        ids, mask, _ = pad_ids(self.build_inputs([PROBE])[0], self.tokenizer.pad_token_id or 0)
        return ids, mask

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

        onnx = self.runtime() in ONNX_RUNTIMES
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
            layers = "".join(f"/layers{k}" for k in self.layers_tag().values())
            return f"transformer-vectors/{self.base_sha256[:16]}/{tok}/{self.config.pooling}/{settings}{layers}"
        # target pooling adds the target-mask row to every item: other readers cannot use them
        return f"transformer-ids/{tok}/{settings}" + ("/target" if self.config.pooling == "target" else "")
