"""What a reproduction reads: the datasets (or their quick subsets, which keep the paper's
case-study dialogue), their files' checksums, and the ``dataset`` record of ``runs.jsonl``."""
from __future__ import annotations

import os
import re
from typing import Any

from .plan import QUICK_SIZES
from .records import encode_dialogues


#: The case study of the paper's Table 5 (section 3.6): its first utterance and speakers.
CASE_STUDY_ANCHOR = ("chandler", "what are you doing tonight", "joey")


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", text.lower().replace("’", "'")).strip()


def find_case_study(corpus: Any) -> dict[str, Any] | None:
    """The paper's Table 5 dialogue, located in the MELD test split by its utterances:
    Chandler's "What are you doing tonight?" answered by Joey.  Returns its id, its position
    in the test split, the index of that first utterance, and every utterance (speaker,
    text, gold)."""
    speaker, first, reply = CASE_STUDY_ANCHOR
    for index, conv in enumerate(corpus.splits.get("test", [])):
        utts = conv.utterances
        for j in range(len(utts) - 1):
            if (_normalise(utts[j].text) == first and utts[j].speaker.lower() == speaker
                    and utts[j + 1].speaker.lower() == reply):
                return {
                    "dialogue_id": conv.id, "test_index": index, "start": j,
                    "utterances": [[u.speaker, u.text, u.label] for u in utts],
                }
    return None


def quick_subset(corpus: Any) -> Any:
    """The first few dialogues of every split (:data:`QUICK_SIZES`); the case-study dialogue
    is kept in the test subset (it replaces the last one) so Table 5 renders in quick mode."""
    from ..data.conversation import Corpus

    sizes = QUICK_SIZES.get(corpus.name, (40, 10, 20))
    splits = {name: list(corpus.splits.get(name, []))[:n] for name, n in zip(("train", "dev", "test"), sizes)}
    case = find_case_study(corpus)
    if case is not None and not any(c.id == case["dialogue_id"] for c in splits["test"]):
        splits["test"] = splits["test"][:-1] + [corpus.splits["test"][case["test_index"]]]
    return Corpus(corpus.name, corpus.labels, splits, corpus.notes)


def load_dataset(name: str, data_root: str | os.PathLike[str] | None = None, quick: bool = False) -> Any:
    from ..data.registry import load_corpus

    corpus = load_corpus(name, data_root)
    return quick_subset(corpus) if quick else corpus


def data_files(name: str, data_root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """sha256 of the files the dataset reader reads, by file name."""
    from ..data import iemocap, meld
    from ..data.registry import resolve_data_dir
    from ..utils import sha256_file

    directory = resolve_data_dir(name, data_root)
    if name == "meld":
        files = [directory / f for f in meld.FILES.values()]
    elif iemocap.has_csvs(directory):
        files = [directory / f for f in iemocap.CSV_FILES.values()]
    else:
        files = [iemocap.find_pickle(directory)]  # type: ignore[list-item]
    return {str(p.relative_to(directory)): sha256_file(p) for p in files if p is not None}


def dataset_record(name: str, corpus: Any, data_root: str | os.PathLike[str] | None, quick: bool) -> dict[str, Any]:
    from ..training.trainer import fingerprint

    index = {label: i for i, label in enumerate(corpus.labels)}
    test = corpus.splits.get("test", [])
    case = find_case_study(corpus)
    if case is not None:
        case["utterances"] = [[s, t, g] for s, t, g in case["utterances"]]
    return {
        "kind": "dataset", "dataset": name, "quick": quick, "labels": list(corpus.labels),
        "data_files": data_files(name, data_root),
        "data_checksums": {split: fingerprint(convs) for split, convs in corpus.splits.items()},
        "sizes": {split: [len(convs), sum(len(c) for c in convs)] for split, convs in corpus.splits.items()},
        "test_dialogues": [c.id for c in test],
        "test_gold": encode_dialogues([[index[u.label] if u.label is not None else -1 for u in c.utterances]
                                        for c in test]),
        "case_study": case,
    }


__all__ = ["data_files", "dataset_record", "find_case_study", "load_dataset", "quick_subset"]
