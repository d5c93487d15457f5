"""DailyDialog (7 labels, 0 = no emotion) from the official split zips.

Each ``dd_<split>.zip`` holds ``<split>/dialogues_<split>.txt`` (one dialogue per line,
utterances ended by ``__eou__``) and ``<split>/dialogues_emotion_<split>.txt`` (one label
id per utterance).  The release's "validation" split is this project's "dev".
"""
from __future__ import annotations

import itertools
import os
import zipfile
from pathlib import Path
from typing import Iterator

from ..errors import DataError
from .conversation import Conversation, Corpus, Utterance
from .text_io import decode_lines, empty_notes

#: Label ids 0..6 as in the release's readme.
LABELS: tuple[str, ...] = (
    "no emotion", "anger", "disgust", "fear", "happiness", "sadness", "surprise",
)
SPLITS: tuple[str, ...] = ("train", "dev", "test")
#: Our split name -> the release's split name.
RELEASE_SPLITS: dict[str, str] = {"train": "train", "dev": "validation", "test": "test"}
FILES: dict[str, str] = {split: f"dd_{rel}.zip" for split, rel in RELEASE_SPLITS.items()}
EOU = "__eou__"
SPEAKERS: tuple[str, str] = ("A", "B")


def _member(zf: zipfile.ZipFile, zip_name: str, basename: str) -> str:
    """The archive member called ``basename`` (normally under ``<split>/``)."""
    for info in zf.infolist():
        if info.filename.rsplit("/", 1)[-1] == basename:
            return info.filename
    raise DataError(f"{zip_name}: no member {basename!r} in the archive")


def _member_lines(zf: zipfile.ZipFile, zip_name: str, member: str) -> Iterator[tuple[int, str]]:
    with zf.open(member) as f:
        yield from decode_lines(f, f"{zip_name}[{member}]")


def _labels(line: str, name: str, lineno: int) -> list[str]:
    out = []
    for token in line.split():
        if not (token.isdigit() and int(token) < len(LABELS)):
            raise DataError(
                f"{name}:{lineno}: label {token!r} is not an id 0..{len(LABELS) - 1}"
            )
        out.append(LABELS[int(token)])
    return out


def read_dailydialog_split(
    zip_path: str | os.PathLike[str], split: str, notes: list[str] | None = None
) -> list[Conversation]:
    """One split's dialogues (ids ``<split>_<line index>``), speakers alternating A/B.

    A dialogue whose label count differs from its utterance count keeps only the labelled
    utterances (train #7851 has one unlabelled last utterance); each case goes to ``notes``.
    """
    rel = RELEASE_SPLITS[split]
    zip_name = str(zip_path)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{zip_name}: cannot open zip archive: {e}") from None
    with zf:
        text_member = _member(zf, zip_name, f"dialogues_{rel}.txt")
        label_member = _member(zf, zip_name, f"dialogues_emotion_{rel}.txt")
        text_name, label_name = f"{zip_name}[{text_member}]", f"{zip_name}[{label_member}]"
        pairs = itertools.zip_longest(
            _member_lines(zf, zip_name, text_member), _member_lines(zf, zip_name, label_member)
        )
        conversations: list[Conversation] = []
        for index, (text_line, label_line) in enumerate(pairs):
            if text_line is None or label_line is None:
                shorter = text_name if text_line is None else label_name
                raise DataError(f"{shorter}: ends at line {index}, but the other file goes on")
            lineno, text = text_line
            texts = [t.strip() for t in text.split(EOU)]
            if texts and not texts[-1]:
                texts.pop()  # the text after the last __eou__ (just the newline)
            labels = _labels(label_line[1], label_name, label_line[0])
            if not texts and not labels:
                continue
            conv_id = f"{split}_{index}"
            if len(texts) != len(labels):
                n = min(len(texts), len(labels))
                what = (f"dropped {len(texts) - n} unlabelled trailing utterance(s)"
                        if len(texts) > n else f"ignored {len(labels) - n} surplus label(s)")
                if notes is not None:
                    notes.append(f"{text_name}:{lineno}: dialogue {conv_id} has {len(texts)} "
                                 f"utterances but {len(labels)} labels; {what}")
                texts, labels = texts[:n], labels[:n]
                if not texts:
                    continue
            utterances = [
                Utterance(SPEAKERS[i % 2], t, label)
                for i, (t, label) in enumerate(zip(texts, labels))
            ]
            conversations.append(Conversation(conv_id, utterances))
    return conversations


def read_dailydialog(data_dir: str | os.PathLike[str]) -> Corpus:
    """DailyDialog from a directory holding ``dd_{train,validation,test}.zip``."""
    data_dir = Path(data_dir)
    notes = empty_notes(SPLITS)
    splits = {
        split: read_dailydialog_split(data_dir / FILES[split], split, notes[split])
        for split in SPLITS
    }
    return Corpus(name="dailydialog", labels=LABELS, splits=splits, notes=notes)
