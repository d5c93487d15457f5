"""Utterance encoders behind one contract (:class:`~iein.encoders.base.UtteranceEncoder`)."""
from .base import EncoderConfig, Featurizer, UtteranceEncoder
from .registry import ENCODERS, get_encoder_class, register_encoder

__all__ = ["EncoderConfig", "Featurizer", "UtteranceEncoder", "ENCODERS", "get_encoder_class", "register_encoder"]
