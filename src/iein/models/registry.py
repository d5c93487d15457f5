"""Context models by name (``--arch``).  A new model is one file in this folder, one line
here (a "module:Class" string) and a preset line in :mod:`iein.training.config`."""
from __future__ import annotations

from typing import Any

from ..encoders.base import EncoderConfig, Featurizer
from ..encoders.registry import get_encoder_class
from ..errors import ConfigError
from ..lazy import LazyRegistry
from .base import ConversationModel, ModelConfig

#: ``--arch`` name -> model class, imported on first use (DialogueGCN pulls in PyTorch
#: Geometric, cLSTM+CRF pytorch-crf: a GloVe IEIN's cold start needs neither).
MODELS: LazyRegistry[type[ConversationModel]] = LazyRegistry({
    "iein": "iein.models.iein:IEIN",
    "cnn": "iein.models.cnn:CNN",
    "clstm": "iein.models.clstm:CLSTM",
    "clstm_crf": "iein.models.clstm_crf:CLSTMCRF",
    "dialoguernn": "iein.models.dialoguernn:DialogueRNN",
    "dialoguegcn": "iein.models.dialoguegcn:DialogueGCN",
})


def get_model_class(name: str) -> type[ConversationModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r} (choices: {', '.join(MODELS)})") from None


def build_model(
    model_type: str,
    model_config: dict[str, Any] | ModelConfig,
    encoder_type: str,
    encoder_config: dict[str, Any] | EncoderConfig,
    featurizer: Featurizer | None = None,
    featurizer_state: dict[str, Any] | None = None,
    pretrained: bool = False,
) -> ConversationModel:
    """Any model on any encoder.  ``featurizer`` (training) or ``featurizer_state`` (a
    checkpoint) supplies the encoder's featurizer; ``pretrained`` copies the featurizer's
    pretrained weights (GloVe rows) into the encoder -- a checkpoint's weights replace them."""
    model_cls = get_model_class(model_type)
    enc_cls = get_encoder_class(encoder_type)
    ecfg = encoder_config if isinstance(encoder_config, EncoderConfig) else enc_cls.config_class.from_dict(encoder_config)
    mcfg = model_config if isinstance(model_config, ModelConfig) else model_cls.config_class.from_dict(model_config)
    if featurizer is None:
        if featurizer_state is None:
            raise ConfigError("build_model needs a featurizer or its saved state")
        featurizer = enc_cls.featurizer_from_state(featurizer_state, ecfg)
    encoder = enc_cls(ecfg, featurizer)
    if pretrained:
        encoder.init_pretrained()
    return model_cls(mcfg, encoder)
