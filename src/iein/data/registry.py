"""Find and load corpora by name (MELD, IEMOCAP, DailyDialog) or from a user's own files.

The data directory is looked up in a fixed order so that tests, CI and users all work
without configuration: ``--data-dir``, then ``$IEIN_DATA_DIR/<name>``, then
``../shared/data/<name>`` (the project's checkout layout), then ``~/.cache/iein/data/<name>``
(where ``iein data download`` puts files).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from ..errors import DataError
from . import dailydialog, iemocap, meld
from .text_io import empty_notes
from .conversation import Conversation, Corpus, infer_labels
from .generic import check_label_spellings, check_labels, read_conversations

DATASETS: tuple[str, ...] = ("meld", "iemocap", "dailydialog")
ENV_DATA_DIR = "IEIN_DATA_DIR"
SPLITS: tuple[str, ...] = ("train", "dev", "test")

_READERS: dict[str, Callable[[Path], Corpus]] = {
    "meld": meld.read_meld,
    "iemocap": iemocap.read_iemocap,
    "dailydialog": dailydialog.read_dailydialog,
}
_EXPECTED: dict[str, str] = {
    "meld": ", ".join(meld.FILES.values()),
    "iemocap": "iemocap_{train,dev,test}.csv or raw/cosmic_iemocap.pkl",
    "dailydialog": ", ".join(dailydialog.FILES.values()),
}
#: File names tried for each split of a user corpus directory, in order.
_SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train",), "dev": ("dev", "validation", "valid"), "test": ("test",),
}
_EXTENSIONS = (".jsonl", ".json", ".csv")


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")


def has_files(name: str, path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds everything the reader of dataset ``name`` needs."""
    _check_name(name)
    path = Path(path)
    if name == "iemocap":
        return iemocap.has_csvs(path) or iemocap.find_pickle(path) is not None
    files = meld.FILES if name == "meld" else dailydialog.FILES
    return all((path / f).is_file() for f in files.values())


def _cache_dir(name: str) -> Path:
    return Path.home() / ".cache" / "iein" / "data" / name


def default_data_dir(name: str) -> Path:
    """Where dataset ``name`` is looked for without ``--data-dir``."""
    _check_name(name)
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser() / name
    shared = Path.cwd().parent / "shared" / "data" / name
    if shared.is_dir():
        return shared
    return _cache_dir(name)


def download_dir(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where ``iein data download`` puts dataset ``name``: ``<data_dir>/<name>``, else
    ``$IEIN_DATA_DIR/<name>``, else the user cache (never the read-only shared folder)."""
    _check_name(name)
    root = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR)
    return Path(root).expanduser() / name if root else _cache_dir(name)


def resolve_data_dir(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding dataset ``name``, or a DataError saying how to get it.

    An explicit ``data_dir`` may be the root (holding ``<name>/``) or the dataset folder.
    """
    _check_name(name)
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        candidates = [root / name, root]
    else:
        candidates = [default_data_dir(name)]
    for path in candidates:
        if has_files(name, path):
            return path
    where = candidates[0]
    if name == "iemocap":
        raise DataError(f"iemocap: no data in {where}; {iemocap.licence_message(where)}")
    raise DataError(
        f"{name}: no data in {where} (expected {_EXPECTED[name]}); run "
        f"`iein data download {name}` or pass --data-dir"
    )


def _split_files(directory: Path) -> dict[str, Path | None]:
    """``train``/``dev``/``test`` files of a user corpus directory (dev may be 'validation')."""
    files: dict[str, Path | None] = {}
    for split, stems in _SPLIT_NAMES.items():
        names = [stem + ext for stem in stems for ext in _EXTENSIONS]
        found = [directory / n for n in names if (directory / n).is_file()]
        if len(found) > 1:
            raise DataError(
                f"{directory}: several {split} files ({', '.join(p.name for p in found)}); keep one"
            )
        files[split] = found[0] if found else None
    return files


def _require_labelled(conversations: list[Conversation], source: str) -> None:
    for conv in conversations:
        for i, u in enumerate(conv.utterances):
            if u.label is None:
                raise DataError(
                    f"{source}: conversation {conv.id!r} utterance {i}: no label "
                    "(training data must be fully labelled)"
                )


def _user_corpus(
    name: str, files: dict[str, Path | None], labels: Sequence[str] | None
) -> Corpus:
    splits = {split: read_conversations(p) if p is not None else [] for split, p in files.items()}
    if files["train"] is not None:
        _require_labelled(splits["train"], str(files["train"]))
    if labels is None:
        if files["train"] is None:
            raise DataError(f"{name}: without a train file the labels must be given explicitly")
        labels = infer_labels(splits["train"])
        if not labels:
            raise DataError(f"{files['train']}: no conversations, so no labels to learn")
    labels = tuple(labels)
    valid = all(isinstance(x, str) and x for x in labels)
    if not labels or not valid or len(set(labels)) != len(labels):
        raise DataError(f"{name}: labels must be distinct non-empty strings, got {labels!r}")
    check_label_spellings(splits["train"], labels, str(files["train"] or name))
    for split, path in files.items():
        if path is not None:
            check_labels(splits[split], labels, str(path))
    return Corpus(name=name, labels=labels, splits=splits, notes=empty_notes(SPLITS))


def load_corpus(
    name_or_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    train: str | os.PathLike[str] | None = None,
    dev: str | os.PathLike[str] | None = None,
    test: str | os.PathLike[str] | None = None,
    labels: Sequence[str] | None = None,
) -> Corpus:
    """A named dataset, or a user corpus (files in JSONL/JSON/CSV, see :mod:`.generic`).

    - ``"meld"``/``"iemocap"``/``"dailydialog"``: read from :func:`resolve_data_dir`.
    - any name with ``train=``/``dev=``/``test=`` paths: those files form the corpus.
    - a directory holding ``train.jsonl`` (``.json``/``.csv``), ``dev`` (or ``validation``)
      and ``test`` files, or a single file used as the train split.

    A user corpus's labels are ``labels`` or, if not given, those of the train file in
    order of first appearance; every split is checked against them.
    """
    files: dict[str, Path | None] = {
        split: Path(p) if p is not None else None
        for split, p in (("train", train), ("dev", dev), ("test", test))
    }
    given = any(p is not None for p in files.values())
    key = os.fspath(name_or_path)
    if key in DATASETS:
        if given:
            raise DataError(
                f"{key}: a built-in dataset takes no train/dev/test files; give your corpus "
                "another name"
            )
        corpus = _READERS[key](resolve_data_dir(key, data_dir))
        if labels is not None and tuple(labels) != corpus.labels:
            raise DataError(
                f"{key}: its labels are fixed ({', '.join(corpus.labels)}); got {tuple(labels)!r}"
            )
        return corpus
    path = Path(key)
    if given:
        return _user_corpus(path.name or key, files, labels)
    if path.is_dir():
        files = _split_files(path)
        if files["train"] is None and labels is None:
            raise DataError(
                f"{path}: no train file (expected train.jsonl, train.json or train.csv)"
            )
        return _user_corpus(path.resolve().name, files, labels)
    if path.is_file():
        return _user_corpus(path.stem, {"train": path, "dev": None, "test": None}, labels)
    raise DataError(
        f"{key}: not a dataset ({', '.join(DATASETS)}) nor an existing file or directory"
    )


def carve_dev(corpus: Corpus, fraction: float, seed: int = 0) -> Corpus:
    """A corpus whose dev split is ``fraction`` of the train *dialogues*, drawn with a
    seeded generator (whole dialogues, so no conversation is split across train and dev).
    Used by ``iein train --dev-fraction``; the note says what was done."""
    import numpy as np

    if not 0.0 < fraction < 1.0:
        raise DataError(f"--dev-fraction must be between 0 and 1, got {fraction}")
    train = corpus.splits.get("train") or []
    n_dev = int(round(fraction * len(train)))
    if n_dev < 1 or n_dev >= len(train):
        raise DataError(f"--dev-fraction {fraction}: {len(train)} training conversations give "
                        f"{n_dev} for dev; need at least 1 for each split")
    order = np.random.default_rng(seed).permutation(len(train))
    dev_idx = set(int(i) for i in order[:n_dev])
    splits = dict(corpus.splits)
    splits["train"] = [c for i, c in enumerate(train) if i not in dev_idx]
    splits["dev"] = [c for i, c in enumerate(train) if i in dev_idx]
    notes = {k: list(v) for k, v in corpus.notes.items()}
    notes.setdefault("dev", []).append(
        f"dev is {n_dev} of the {len(train)} train conversations (--dev-fraction {fraction}, seed {seed})")
    return Corpus(corpus.name, corpus.labels, splits, notes)
