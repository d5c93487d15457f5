"""Share a trained model the way models are shared in this field: a Hugging Face hub
repository holding the checkpoint and a model card (``iein export-model``).

The folder written here is what :func:`iein.recognizer.resolve_model` downloads for an id
``org/name``: ``iein.safetensors`` (the checkpoint, unchanged), ``README.md`` (the hub's model
card, generated from the checkpoint's own metadata) and ``iein.card.json`` when the checkpoint
has one beside it.  Upload it with ``hf upload org/name DIR`` (``huggingface-cli upload`` in
older releases).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .errors import ConfigError
from .hub import CARD_FILE, IEIN_FILE, README_FILE, model_card
from .recognizer import Recognizer

__all__ = ["export_model"]


def export_model(model: str, folder: str | Path, repo_id: str = "ORG/NAME") -> Path:
    """Write the hub repository folder of ``model`` (a path or shipped name) to ``folder``,
    which must not exist yet (a new folder appears whole or not at all).  The checkpoint is
    loaded first, so a damaged one is refused rather than shared."""
    rec = Recognizer.load(model)
    dest = Path(folder)
    if dest.exists():
        raise ConfigError(f"{dest} exists: export-model writes a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        assert rec.path is not None
        shutil.copyfile(rec.path, tmp / IEIN_FILE)
        files = [IEIN_FILE, README_FILE]
        side = rec.path.with_suffix(".card.json")
        if side.is_file():
            shutil.copyfile(side, tmp / CARD_FILE)
            files.append(CARD_FILE)
        (tmp / README_FILE).write_text(model_card(rec.card, repo_id, files), encoding="utf-8")
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
