"""IEMOCAP transcripts (6 emotions) from per-split CSVs or the community COSMIC pickle.

The CSVs (``iemocap_{train,dev,test}.csv``) are the pickle converted row by row; both
layouts give the same :class:`Corpus`.  The pickle goes through :mod:`safe_pickle`,
since a pickle downloaded from the internet could otherwise run code when loaded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from ..errors import DataError
from .conversation import Conversation, Corpus, Utterance
from .text_io import empty_notes, group_utterances, iter_csv_records, parse_int, parse_label, read_lines
from .safe_pickle import safe_load

#: Label ids as in the pickle: 0 happy, 1 sad, 2 neutral, 3 angry, 4 excited, 5 frustrated.
LABELS: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "excited", "frustrated")
SPLITS: tuple[str, ...] = ("train", "dev", "test")
CSV_FILES: dict[str, str] = {split: f"iemocap_{split}.csv" for split in SPLITS}
COLUMNS: tuple[str, ...] = (
    "Dialogue_ID", "Utterance_ID", "Speaker", "Emotion", "Label_ID", "Utterance",
)
#: Where the pickle may sit inside the IEMOCAP data directory, in order of preference.
PICKLE_PATHS: tuple[str, ...] = ("raw/cosmic_iemocap.pkl", "cosmic_iemocap.pkl")


def read_iemocap_csv_split(path: str | os.PathLike[str]) -> list[Conversation]:
    """One split's CSV: dialogues in file order, utterances by Utterance_ID."""
    name = str(path)

    def rows():
        for line, rec in iter_csv_records(read_lines(path), name, COLUMNS):
            label = parse_label(rec["Emotion"], LABELS, name, line, "Emotion")
            label_id = parse_int(rec["Label_ID"], name, line, "Label_ID")
            if label_id != LABELS.index(label):
                raise DataError(
                    f"{name}:{line} field 'Label_ID': {label_id} does not match Emotion "
                    f"{label!r} (expected {LABELS.index(label)})"
                )
            dialogue = rec["Dialogue_ID"].strip()
            if not dialogue:
                raise DataError(f"{name}:{line} field 'Dialogue_ID': empty")
            utt = Utterance(rec["Speaker"].strip(), rec["Utterance"].strip(), label)
            yield dialogue, parse_int(rec["Utterance_ID"], name, line, "Utterance_ID"), line, utt

    return [Conversation(key, utts) for key, utts in group_utterances(rows(), name).items()]


def read_iemocap_csv(data_dir: str | os.PathLike[str]) -> Corpus:
    data_dir = Path(data_dir)
    splits = {split: read_iemocap_csv_split(data_dir / CSV_FILES[split]) for split in SPLITS}
    return Corpus(name="iemocap", labels=LABELS, splits=splits, notes=empty_notes(SPLITS))


def _expect(ok: bool, name: str, what: str) -> None:
    if not ok:
        raise DataError(f"{name}: unexpected IEMOCAP pickle layout: {what}")


def _pickle_dialogue(
    name: str, did: Any, speakers: dict, labels: dict, sentences: dict
) -> Conversation:
    """One dialogue of the pickle, checked: parallel lists of equal length, known label ids."""
    _expect(isinstance(did, str), name, f"dialogue id {did!r} is not a string")
    for part, table in (("speakers", speakers), ("labels", labels), ("sentences", sentences)):
        _expect(isinstance(table.get(did), list), name, f"dialogue {did!r} has no {part} list")
    spk, lab, sen = speakers[did], labels[did], sentences[did]
    _expect(
        len(spk) == len(lab) == len(sen), name,
        f"dialogue {did!r} has {len(spk)} speakers, {len(lab)} labels, {len(sen)} sentences",
    )
    utterances = []
    for i, (s, l, t) in enumerate(zip(spk, lab, sen)):
        _expect(isinstance(s, str) and isinstance(t, str), name,
                f"dialogue {did!r} utterance {i}: speaker and sentence must be strings")
        _expect(isinstance(l, int) and not isinstance(l, bool) and 0 <= l < len(LABELS), name,
                f"dialogue {did!r} utterance {i}: label {l!r} is not an id 0..{len(LABELS) - 1}")
        utterances.append(Utterance(s.strip(), t.strip(), LABELS[l]))
    return Conversation(did, utterances)


def read_iemocap_pickle(path: str | os.PathLike[str]) -> Corpus:
    """The COSMIC pickle: ``[speakers, labels, sentences, train_ids, test_ids, dev_ids]``."""
    name = str(path)
    obj = safe_load(path, encoding="latin1")
    _expect(isinstance(obj, (list, tuple)) and len(obj) >= 6, name,
            "expected a list [speakers, labels, sentences, train_ids, test_ids, dev_ids]")
    speakers, labels, sentences, train_ids, test_ids, dev_ids = obj[:6]
    for part, table in (("speakers", speakers), ("labels", labels), ("sentences", sentences)):
        _expect(isinstance(table, dict), name, f"{part} is not a dict")
    ids = {"train": train_ids, "dev": dev_ids, "test": test_ids}
    splits = {}
    for split in SPLITS:
        _expect(isinstance(ids[split], (list, tuple)), name, f"{split} ids are not a list")
        splits[split] = [
            _pickle_dialogue(name, did, speakers, labels, sentences) for did in ids[split]
        ]
    return Corpus(name="iemocap", labels=LABELS, splits=splits, notes=empty_notes(SPLITS))


def find_pickle(data_dir: str | os.PathLike[str]) -> Path | None:
    for rel in PICKLE_PATHS:
        if (Path(data_dir) / rel).is_file():
            return Path(data_dir) / rel
    return None


def has_csvs(data_dir: str | os.PathLike[str]) -> bool:
    return all((Path(data_dir) / f).is_file() for f in CSV_FILES.values())


def read_iemocap(
    data_dir: str | os.PathLike[str], source: Literal["auto", "csv", "pickle"] = "auto"
) -> Corpus:
    """IEMOCAP from ``data_dir``: the CSVs if present (``auto``), else the pickle."""
    if source == "csv" or (source == "auto" and has_csvs(data_dir)):
        return read_iemocap_csv(data_dir)
    pkl = find_pickle(data_dir)
    if pkl is None:
        raise DataError(
            f"{data_dir}: no IEMOCAP data (expected iemocap_{{train,dev,test}}.csv or "
            f"{' or '.join(PICKLE_PATHS)})"
        )
    return read_iemocap_pickle(pkl)


def licence_message(data_dir: str | os.PathLike[str]) -> str:
    """Why IEMOCAP is never downloaded, and where to put it once obtained (one line)."""
    return (
        "IEMOCAP is licensed by SAIL/USC for research use and cannot be downloaded "
        "automatically: request access at https://sail.usc.edu/iemocap/, then put "
        f"iemocap_{{train,dev,test}}.csv or raw/cosmic_iemocap.pkl in {data_dir}"
    )
