"""One resolver from "what the user asked for" to a complete experiment config.

Used by ``iein train``, ``iein reproduce``, the benchmarks and the profiler, so "preset +
overrides -> configs" is written once.  Precedence, lowest first: the model's, encoder's
and training config's dataclass defaults; the preset (named, or the dataset's default);
``--arch`` / ``--encoder`` (a preset's model/encoder overrides only apply to the
arch/encoder they were written for); ``--set`` overrides; the dedicated flags
(``--seed``, ``--threads``, ``--epochs``, ``--device``).

``--set KEY=VALUE`` may name ``model.KEY``, ``encoder.KEY`` or ``train.KEY``; a bare KEY is
looked up in all three and must be unambiguous.  ``utterance_hidden`` (IEIN's GRU size
before encoders were components) is accepted as ``encoder.hidden``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..encoders.registry import get_encoder_class
from ..errors import ConfigError
from ..models.registry import get_model_class
from .config import PRESETS, TrainConfig, default_preset, get_preset

_ALIASES = {"utterance_hidden": ("encoder", "hidden")}
_SECTIONS = ("model", "encoder", "train")


@dataclass
class ExperimentConfig:
    """Everything one training needs besides the data and the word vectors."""

    preset: str
    arch: str
    encoder: str
    model: dict[str, Any] = field(default_factory=dict)  # model config overrides
    encoder_config: dict[str, Any] = field(default_factory=dict)  # encoder config overrides
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"] = self.train.to_dict()
        return d

    @property
    def description(self) -> str:
        p = PRESETS[self.preset]
        if self.encoder != p.encoder and self.encoder in p.on_encoder and self.arch == p.arch:
            return f"{p.description} [on {self.encoder} here: the preset's settings for it]"
        if self.encoder != p.encoder:  # the preset's text names its own encoder
            return f"{p.description} [on {self.encoder} here: the preset's {p.encoder} settings do not apply]"
        return p.description

    def stage1(self) -> "ExperimentConfig | None":
        """Stage 1 of a two-stage preset (its utterance classifier, same seed and speed
        settings), or None: when the preset is single-stage, or the encoder is not the
        preset's own (``--encoder``/``--encoder-from`` chose the utterance vectors)."""
        p = PRESETS[self.preset]
        if p.stage1 is None or self.encoder != p.encoder:
            return None
        flags: dict[str, Any] = {k: getattr(self.train, k) for k in ("seed", "threads", "device")}
        # a stage 2 capped below its preset (--epochs, the quick reproduction) caps stage 1 alike;
        # otherwise stage 1 keeps its own cap, which may be the longer one
        if self.train.max_epochs < TrainConfig.from_dict(p.train).max_epochs:
            flags["max_epochs"] = min(self.train.max_epochs, TrainConfig.from_dict(PRESETS[p.stage1].train).max_epochs)
        return resolve_experiment(preset=p.stage1, encoder=self.encoder, overrides={
            f"encoder.{k}": v for k, v in self.encoder_config.items()}, **flags)

    def on_frozen_encoder(self, checkpoint: str) -> "ExperimentConfig":
        """Stage 2: the same experiment on the frozen encoder of ``checkpoint``."""
        return dataclasses.replace(self, encoder="frozen", encoder_config={"checkpoint": str(checkpoint)})


def encoder_advice(exp: ExperimentConfig) -> str | None:
    """A better packaged encoder the user has installed but is not using, or None.  Frozen
    MPNet with the layer mix scored higher on dev than frozen MiniLM on both corpora measured,
    but takes about six times as long to encode, so it is advised, not imposed."""
    from ..encoders.base_models import packaged_installed

    cfg = exp.encoder_config
    if exp.encoder != "transformer" or cfg.get("model", "minilm") != "minilm" or cfg.get("mode", "frozen") != "frozen":
        return None
    if not packaged_installed("mpnet"):
        return None
    return ("all-mpnet-base-v2 is installed; frozen, with the same layer mix, it scored higher on dev than MiniLM "
            "on MELD and IEMOCAP (docs/results.md), at several times the time to encode: --set encoder.model=mpnet")


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["lam=50", "model.iterations=3"]`` -> dict; values parsed as JSON when they are."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _route(key: str, model_fields: set[str], encoder_fields: set[str]) -> tuple[str, str]:
    if key in _ALIASES:
        return _ALIASES[key]
    section, dot, name = key.partition(".")
    if dot:
        if section not in _SECTIONS:
            raise ConfigError(f"--set {key}: section must be one of {', '.join(_SECTIONS)}")
        return section, name
    derived = {"n_labels", "vocab_size", "embedding_dim"}
    hits = [s for s, fields in (("model", model_fields), ("encoder", encoder_fields),
                                ("train", TrainConfig.field_names())) if key in fields and key not in derived]
    if not hits:
        raise ConfigError(f"--set {key}: not a setting of the model, the encoder or training "
                          f"(see `iein presets`)")
    if len(hits) > 1:
        raise ConfigError(f"--set {key}: ambiguous, write {' or '.join(f'{s}.{key}' for s in hits)}")
    return hits[0], key


def resolve_experiment(
    dataset: str | None = None,
    preset: str | None = None,
    arch: str | None = None,
    encoder: str | None = None,
    overrides: dict[str, Any] | None = None,
    **train_flags: Any,
) -> ExperimentConfig:
    """Resolve a preset and overrides; every name is checked, errors are one line.

    ``train_flags`` are dedicated CLI flags for training fields (``seed``, ``threads``,
    ``max_epochs``, ``device``); ``None`` values are ignored."""
    name = preset or default_preset(dataset or "generic", arch)
    p = get_preset(name)
    arch = arch or p.arch
    encoder = encoder or p.encoder
    model_cls, enc_cls = get_model_class(arch), get_encoder_class(encoder)
    model_over = dict(p.model) if arch == p.arch else {}
    enc_over = dict(p.encoder_config) if encoder == p.encoder else {}
    extra = p.on_encoder.get(encoder, {}) if encoder != p.encoder and arch == p.arch else {}
    if extra:
        enc_over = dict(extra.get("encoder_config", {}))
        model_over.update(extra.get("model", {}))
    # a preset written for another encoder still decides the dropout of the utterance vectors
    train_over = dict(p.train)
    sections = {"model": model_over, "encoder": enc_over, "train": train_over}
    for key, value in (overrides or {}).items():
        section, fname = _route(key, model_cls.config_class.field_names(), enc_cls.config_class.field_names())
        known = {"model": model_cls.config_class.field_names(), "encoder": enc_cls.config_class.field_names(),
                 "train": TrainConfig.field_names()}[section]
        if fname not in known:
            raise ConfigError(f"--set {key}: {section} setting {fname!r} does not exist for "
                              f"{ {'model': arch, 'encoder': encoder, 'train': 'training'}[section] } "
                              f"(known: {', '.join(sorted(known))})")
        sections[section][fname] = value
    for key, value in train_flags.items():
        if value is not None:
            train_over[key] = value
    # validate now (bad values fail before any data is read)
    model_cls.config_class.from_dict(model_over)
    enc_cls.config_class.from_dict(enc_over)
    cfg = TrainConfig.from_dict(train_over)
    return ExperimentConfig(name, arch, encoder, model_over, enc_over, cfg)
