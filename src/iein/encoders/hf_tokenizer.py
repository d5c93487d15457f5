"""A base model's tokenizer and config, read without importing ``transformers`` where possible.

Prediction with a transformer encoder needs the tokenizer and three numbers of the model's
config.  ``transformers.AutoTokenizer`` / ``AutoConfig`` import transformers' model-loading
machinery on the way (a large part of a transformer model's start-up, ``docs/results.md``), so
a folder with a ``tokenizer.json`` (every fast tokenizer, both packaged models) is read with the
``tokenizers`` library alone: the same Rust tokenizer that transformers' fast tokenizer wraps,
with the file's own truncation and padding switched off (the featurizer cuts and pads itself).
A folder without one (a slow, Python-only tokenizer) goes through ``transformers``.
``tests/test_hf_tokenizer.py`` compares the two on the corpora.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Protocol, Sequence

from ..errors import ConfigError
from ..hub import TOKENIZER_FILES


class Tokenizer(Protocol):
    """What the transformer featurizer asks of a tokenizer."""

    pad_token_id: int | None
    unk_token_id: int | None
    model_max_length: int | None

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens, no truncation."""

    def pair_template(self) -> tuple[list[int], list[int], int]:
        """Ids and special-token mask of the pair ``("a", "b")`` with special tokens, and the
        number of tokens of ``"a"`` alone: the input layout is read off them."""

    def save_pretrained(self, folder: str) -> Any:
        """Write the tokenizer's files into ``folder``."""


def _token_name(value: Any) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class FileTokenizer:
    """A fast tokenizer from its ``tokenizer.json`` through ``tokenizers`` (no transformers)."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer as RustTokenizer

        self.model_dir = model_dir
        self.rust = RustTokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.rust.no_truncation()
        self.rust.no_padding()
        settings: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the config wins, as in transformers
            path = model_dir / name
            if path.is_file():
                try:
                    settings.update(json.loads(path.read_text(encoding="utf-8")))
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        self.pad_token_id = self._id(settings.get("pad_token"))
        self.unk_token_id = self._id(settings.get("unk_token"))
        limit = settings.get("model_max_length")
        self.model_max_length = int(limit) if isinstance(limit, (int, float)) else None

    def _id(self, token: Any) -> int | None:
        name = _token_name(token)
        return None if name is None else self.rust.token_to_id(name)

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.rust.encode_batch(list(texts), add_special_tokens=False)]

    def pair_template(self) -> tuple[list[int], list[int], int]:
        enc = self.rust.encode("a", "b")
        return list(enc.ids), list(enc.special_tokens_mask), len(self.rust.encode("a", add_special_tokens=False).ids)

    def save_pretrained(self, folder: str) -> list[str]:
        copied = []
        for name in TOKENIZER_FILES:
            if (self.model_dir / name).is_file():
                shutil.copy2(self.model_dir / name, Path(folder) / name)
                copied.append(name)
        return copied


class TransformersTokenizer:
    """Any tokenizer ``transformers.AutoTokenizer`` reads (the fallback: no ``tokenizer.json``)."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoTokenizer

        self.hf = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.pad_token_id = self.hf.pad_token_id
        self.unk_token_id = self.hf.unk_token_id
        self.model_max_length = self.hf.model_max_length

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        # verbose=False: no "longer than the maximum" warning, the featurizer cuts deliberately
        return self.hf(list(texts), add_special_tokens=False, verbose=False)["input_ids"] if texts else []

    def pair_template(self) -> tuple[list[int], list[int], int]:
        enc = self.hf("a", "b", return_special_tokens_mask=True)
        return list(enc["input_ids"]), list(enc["special_tokens_mask"]), len(self.hf("a", add_special_tokens=False)["input_ids"])

    def save_pretrained(self, folder: str) -> Any:
        return self.hf.save_pretrained(folder)


def load_tokenizer(model_dir: Path) -> Tokenizer:
    """The tokenizer of a Hugging Face folder (see the module docstring for which reader)."""
    if (model_dir / "tokenizer.json").is_file():
        return FileTokenizer(model_dir)
    return TransformersTokenizer(model_dir)


def read_model_config(model_dir: Path) -> dict[str, Any]:
    """``model_type``, ``hidden_size``, ``num_hidden_layers`` and ``max_position_embeddings`` of a
    base model, from its ``config.json``; a config that names them otherwise (DistilBERT's
    ``dim``) goes through ``transformers.AutoConfig``, which knows every family's aliases."""
    path = model_dir / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the base model's config ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a JSON object")
    if not isinstance(raw.get("hidden_size"), int):
        from transformers import AutoConfig

        hf = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
        raw = {"model_type": hf.model_type, "hidden_size": hf.hidden_size,
               "num_hidden_layers": getattr(hf, "num_hidden_layers", 0),
               "max_position_embeddings": getattr(hf, "max_position_embeddings", 512)}
    return {"model_type": str(raw.get("model_type", "")), "hidden_size": int(raw["hidden_size"]),
            "num_hidden_layers": int(raw.get("num_hidden_layers") or 0),
            "max_position_embeddings": int(raw.get("max_position_embeddings") or 512)}
