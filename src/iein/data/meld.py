"""MELD (Friends transcripts, 7 emotions) from the official ``*_sent_emo.csv`` files."""
from __future__ import annotations

import os
from pathlib import Path

from .conversation import Conversation, Corpus, Utterance
from .text_io import (
    empty_notes,
    group_utterances,
    iter_csv_records,
    parse_int,
    parse_label,
    read_lines,
    repair_mojibake,
)

#: The paper's label order (label ids are positions in this tuple).
LABELS: tuple[str, ...] = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
SPLITS: tuple[str, ...] = ("train", "dev", "test")
FILES: dict[str, str] = {split: f"{split}_sent_emo.csv" for split in SPLITS}
COLUMNS: tuple[str, ...] = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")


def read_meld_split(
    path: str | os.PathLike[str], split: str, notes: list[str] | None = None
) -> list[Conversation]:
    """One split's dialogues, ordered by Dialogue_ID, utterances by Utterance_ID.

    IDs have gaps (and a whole train dialogue, 60, is missing), so they are sorted, not
    counted.  Text mangled by an old cp1252 round trip is repaired, and the repair is
    reported in ``notes`` rather than done silently.
    """
    name = str(path)
    repaired: list[int] = []

    def rows():
        for line, rec in iter_csv_records(read_lines(path), name, COLUMNS):
            text = rec["Utterance"].strip()
            fixed = repair_mojibake(text)
            if fixed != text:
                repaired.append(line)
            utt = Utterance(
                speaker=rec["Speaker"].strip(),
                text=fixed,
                label=parse_label(rec["Emotion"], LABELS, name, line, "Emotion"),
            )
            dialogue = parse_int(rec["Dialogue_ID"], name, line, "Dialogue_ID")
            number = parse_int(rec["Utterance_ID"], name, line, "Utterance_ID")
            yield str(dialogue), number, line, utt

    dialogues = group_utterances(rows(), name)
    if repaired and notes is not None:
        notes.append(
            f"{name}: repaired cp1252-mangled text in {len(repaired)} utterance(s) "
            f"(first at line {repaired[0]})"
        )
    return [
        Conversation(id=f"{split}_{key}", utterances=dialogues[key])
        for key in sorted(dialogues, key=int)
    ]


def read_meld(data_dir: str | os.PathLike[str]) -> Corpus:
    """The MELD corpus from a directory holding the three official CSVs."""
    data_dir = Path(data_dir)
    notes = empty_notes(SPLITS)
    splits = {
        split: read_meld_split(data_dir / FILES[split], split, notes[split]) for split in SPLITS
    }
    return Corpus(name="meld", labels=LABELS, splits=splits, notes=notes)
