"""Utterance encoders by name (``--encoder``).  A new encoder is one file in this folder
plus one line here."""
from __future__ import annotations

from ..errors import ConfigError
from .base import UtteranceEncoder
from .glove_bigru import GloveBiGRU
from .glove_cnn import GloveCNN
from .transformer import TransformerEncoder

ENCODERS: dict[str, type[UtteranceEncoder]] = {
    cls.encoder_type: cls for cls in (GloveBiGRU, GloveCNN, TransformerEncoder)
}


def register_encoder(cls: type[UtteranceEncoder]) -> type[UtteranceEncoder]:
    ENCODERS[cls.encoder_type] = cls
    return cls


def get_encoder_class(name: str) -> type[UtteranceEncoder]:
    try:
        return ENCODERS[name]
    except KeyError:
        raise ConfigError(f"unknown encoder {name!r} (choices: {', '.join(ENCODERS)})") from None
