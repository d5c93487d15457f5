"""Utterance encoders by name (``--encoder``).  A new encoder is one file in this folder
plus one line here."""
from __future__ import annotations

from ..errors import ConfigError
from ..lazy import LazyRegistry
from .base import UtteranceEncoder

#: ``--encoder`` name -> encoder class, imported on first use.
ENCODERS: LazyRegistry[type[UtteranceEncoder]] = LazyRegistry({
    "glove-bigru": "iein.encoders.glove_bigru:GloveBiGRU",
    "glove-cnn": "iein.encoders.glove_cnn:GloveCNN",
    "transformer": "iein.encoders.transformer:TransformerEncoder",
    "frozen": "iein.encoders.frozen:FrozenEncoder",
})


def register_encoder(cls: type[UtteranceEncoder]) -> type[UtteranceEncoder]:
    return ENCODERS.register(cls.encoder_type, cls)


def get_encoder_class(name: str) -> type[UtteranceEncoder]:
    try:
        return ENCODERS[name]
    except KeyError:
        raise ConfigError(f"unknown encoder {name!r} (choices: {', '.join(ENCODERS)})") from None
