"""What ``iein predict`` and the service write: the JSONL record of a conversation, the CSV
columns and rows, the step-by-step trace table (the paper's Table 5), and the rounding and
notes both share, so the CLI and the service agree digit for digit."""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from .recognizer import ConversationPrediction
from .utils import plural

__all__ = ["OUTPUT_DIGITS", "EMPTY_TEXT_NOTE", "round_probs", "add_notes", "jsonl_record", "csv_header", "csv_rows",
           "format_trace"]


#: Probabilities written by the CLI and answered by the service are rounded to this many
#: decimals (labels are not affected: they are taken before rounding).
OUTPUT_DIGITS = 6
#: Note on an utterance whose text is empty (or was only whitespace, which is stripped): no
#: words reach the encoder, so its label comes from the conversation around it.  Accepted,
#: not refused, as every reader accepts empty text (see ``make_utterance``).
EMPTY_TEXT_NOTE = "empty text: labelled from context only"


def round_probs(values: Any, digits: int = OUTPUT_DIGITS) -> list[float]:
    """Probabilities rounded exactly as :meth:`ConversationPrediction.to_dicts` rounds them
    (float64, numpy's rounding), so the CLI's JSONL and CSV and the service agree digit for
    digit."""
    return np.asarray(values, dtype=np.float64).round(digits).tolist()


def add_notes(utterances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``"note": EMPTY_TEXT_NOTE`` to every output utterance whose ``text`` is empty;
    used by the CLI's JSONL and the service, so both say the same (returns the list)."""
    for utt in utterances:
        if not utt.get("text"):
            utt["note"] = EMPTY_TEXT_NOTE
    return utterances


def jsonl_record(pred: ConversationPrediction, digits: int | None = OUTPUT_DIGITS) -> dict[str, Any]:
    """The JSONL output object of one conversation: ``{"id", "utterances": [...]}``; an
    utterance carries ``"gold"`` when the input labels it and ``"note"`` when its text is empty."""
    return {"id": pred.conversation.id, "utterances": add_notes(pred.to_dicts(digits))}


def csv_header(steps: int) -> list[str]:
    """CSV output columns: ``dialogue_id, speaker, text, label, gold, step0..stepT, prob, note``.

    ``label`` is the prediction (as in the JSONL output) and ``gold`` the input's own label
    column (empty when unlabelled), so labelled input keeps its gold labels beside the
    predictions; ``note`` is :data:`EMPTY_TEXT_NOTE` or empty."""
    return ["dialogue_id", "speaker", "text", "label", "gold", *(f"step{s}" for s in range(steps)), "prob", "note"]


def csv_rows(pred: ConversationPrediction, digits: int = OUTPUT_DIGITS) -> Iterator[list[Any]]:
    """CSV output rows of one conversation (see :func:`csv_header`); ``prob`` is the
    probability of the final label, rounded as in the JSONL output."""
    labels = pred.labels
    ids = pred.step_ids.T.tolist()
    final = pred.probs[-1]
    for j, (utt, row) in enumerate(zip(pred.conversation.utterances, ids)):
        (prob,) = round_probs([final[j, row[-1]]], digits)
        yield [pred.conversation.id, utt.speaker, utt.text, labels[row[-1]], utt.label or "",
               *(labels[i] for i in row), prob, "" if utt.text else EMPTY_TEXT_NOTE]


_HIGHLIGHT = "\033[1;33m"  # bold yellow
_RESET = "\033[0m"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())  # newlines/tabs would break the table
    return text if len(text) <= width else text[: max(width - 3, 1)] + "..."


def format_trace(pred: ConversationPrediction, color: bool = False, width: int = 48) -> str:
    """A table like the paper's Table 5: No., Speaker, Utterance, the label of every step
    and the gold label when the input has one.  A label that differs from the previous
    step's is highlighted (bold yellow when ``color``, else marked with ``*``)."""
    conv = pred.conversation
    ids = pred.step_ids
    n_steps = ids.shape[0]
    has_gold = any(u.label is not None for u in conv.utterances)
    header = ["No.", "Speaker", "Utterance", *(f"Step={s}" for s in range(n_steps))]
    if has_gold:
        header.append("Gold")
    rows: list[list[tuple[str, bool]]] = [[(h, False) for h in header]]
    n_changed = 0
    for j, utt in enumerate(conv.utterances):
        cells = [(str(j + 1), False), (_clip(utt.speaker, 16), False), (_clip(utt.text, width), False)]
        for s in range(n_steps):
            changed = s > 0 and ids[s, j] != ids[s - 1, j]
            n_changed += changed
            label = pred.labels[ids[s, j]]
            cells.append((label + ("" if color or not changed else "*"), bool(changed)))
        if has_gold:
            cells.append((utt.label or "-", False))
        rows.append(cells)
    widths = [max(len(r[c][0]) for r in rows) for c in range(len(header))]
    how = "highlighted" if color else "marked *"
    lines = [f"conversation {conv.id} ({plural(len(conv), 'utterance')}, {plural(n_changed, 'label change')} {how})"]
    for r in rows:
        parts = []
        for c, (text, hot) in enumerate(r):
            padded = text.ljust(widths[c]) if c < len(r) - 1 else text
            parts.append(f"{_HIGHLIGHT}{padded}{_RESET}" if hot and color else padded)
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
