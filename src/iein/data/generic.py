"""A user's own conversations: JSON Lines or CSV, streamed and strictly validated.

JSONL, one conversation per line::

    {"id": "c1", "utterances": [{"speaker": "A", "text": "Hi!", "label": "joy"}, ...]}

``id`` is optional (default ``<file stem>:<line>``), ``label`` is optional (``null`` or
absent = unlabelled).  CSV has the columns ``dialogue_id, speaker, text[, label]``; a
dialogue is a run of consecutive rows with the same ``dialogue_id``, in file order.

Every problem is a one-line :class:`DataError` naming file, line and field, because these
files are written by hand or by other tools, and "KeyError: 'text'" helps nobody.
:func:`conversation_from_obj` is the one validator, shared with the Python API and the
HTTP service.
"""
from __future__ import annotations

import csv
import itertools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence

from ..errors import DataError
from .conversation import Conversation, Utterance
from .text_io import Source, iter_csv_records, read_lines, source_name

#: Longest accepted utterance, in characters, in every command (train, evaluate, predict):
#: one limit, so a file that predicts also trains.  Encoders read only the first tokens (128
#: words, or the transformer's ``max_tokens``), so a long text costs reading, not model memory.
#: The HTTP service has its own, lower default (``iein serve --max-utterance-chars``).
MAX_UTTERANCE_CHARS = 1_000_000
#: Longest accepted conversation, in utterances.
MAX_UTTERANCES = 10_000
FORMATS: tuple[str, ...] = ("jsonl", "json", "csv")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
CSV_COLUMNS: tuple[str, ...] = ("dialogue_id", "speaker", "text")
CSV_LABEL_COLUMN = "label"
#: ``iein predict``'s CSV output has ``label`` (the prediction) and ``gold`` (the input's own
#: label): read back as input, such a file's gold labels are in ``gold``, never ``label``.
CSV_GOLD_COLUMN = "gold"


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _string(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where} field {field!r}: must be a string, got {_type_name(value)}")
    try:  # JSON may carry "\ud800": a lone surrogate, which no tokenizer or UTF-8 writer accepts
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(f"{where} field {field!r}: not valid Unicode text (a lone surrogate "
                        f"{value[exc.start]!r} at character {exc.start})") from None
    return value


def make_utterance(
    speaker: Any,
    text: Any,
    label: Any,
    where: str,
    *,
    max_utterance_chars: int = MAX_UTTERANCE_CHARS,
) -> Utterance:
    """A validated utterance: non-empty speaker, text (may be empty) within the length limit.

    Speaker, text and label are stripped of surrounding whitespace.  ``label`` is ``None``
    for unlabelled; an empty label string is an error (it is almost always a typo).
    """
    speaker = _string(speaker, where, "speaker").strip()
    if not speaker:
        raise DataError(f"{where} field 'speaker': empty")
    text = _string(text, where, "text")
    if len(text) > max_utterance_chars:
        raise DataError(
            f"{where} field 'text': {len(text)} characters, more than the limit of "
            f"{max_utterance_chars}"
        )
    if label is not None:
        label = _string(label, where, "label").strip()
        if not label:
            raise DataError(f"{where} field 'label': empty (use null or omit it for unlabelled)")
    return Utterance(speaker=speaker, text=text.strip(), label=label)


def _utterance_from_obj(obj: Any, where: str, max_utterance_chars: int) -> Utterance:
    if isinstance(obj, dict):
        for field in ("speaker", "text"):
            if field not in obj:
                raise DataError(f"{where} field {field!r}: missing")
        return make_utterance(obj["speaker"], obj["text"], obj.get("label"), where,
                              max_utterance_chars=max_utterance_chars)
    if isinstance(obj, (list, tuple)) and len(obj) in (2, 3):
        return make_utterance(*obj, *([None] * (3 - len(obj))), where,
                              max_utterance_chars=max_utterance_chars)
    raise DataError(
        f"{where}: an utterance must be an object with 'speaker' and 'text' or a "
        f"[speaker, text] pair, got {_type_name(obj)}"
    )


def conversation_from_obj(
    obj: Any,
    where: str,
    *,
    default_id: str | None = None,
    max_utterance_chars: int = MAX_UTTERANCE_CHARS,
    max_utterances: int = MAX_UTTERANCES,
) -> Conversation:
    """Validate one JSON-like conversation and build it.

    ``obj`` is ``{"id"?: str, "utterances": [...]}`` or a plain list of utterances, each
    ``{"speaker", "text", "label"?}`` or ``[speaker, text]``.  ``where`` (e.g. ``file:line``
    or ``request[2]``) starts every error message; it is also the id when none is given
    and ``default_id`` is None.
    """
    conv_id = default_id if default_id is not None else where
    if isinstance(obj, dict):
        if "id" in obj and obj["id"] is not None:
            raw_id = obj["id"]
            if isinstance(raw_id, int) and not isinstance(raw_id, bool):
                raw_id = str(raw_id)
            conv_id = _string(raw_id, where, "id").strip()
            if not conv_id:
                raise DataError(f"{where} field 'id': empty")
        if "utterances" not in obj:
            raise DataError(f"{where} field 'utterances': missing")
        utterances = obj["utterances"]
        if not isinstance(utterances, list):
            raise DataError(
                f"{where} field 'utterances': must be a list, got {_type_name(utterances)}"
            )
    elif isinstance(obj, list):
        utterances = obj
    else:
        raise DataError(
            f"{where}: a conversation must be an object with 'utterances' or a list of "
            f"utterances, got {_type_name(obj)}"
        )
    if not utterances:
        raise DataError(f"{where} field 'utterances': empty (a conversation needs an utterance)")
    if len(utterances) > max_utterances:
        raise DataError(
            f"{where} field 'utterances': {len(utterances)} utterances, more than the limit "
            f"of {max_utterances}"
        )
    return Conversation(
        id=conv_id,
        utterances=[
            _utterance_from_obj(u, f"{where} utterance {i}", max_utterance_chars)
            for i, u in enumerate(utterances)
        ],
    )


# --- reading ----------------------------------------------------------------------------

def _stem(src: Source) -> str:
    name = source_name(src)
    return "stdin" if name == "<stdin>" else Path(name).stem or "stream"


def format_of(src: Source, fmt: str | None) -> str | None:
    """Explicit ``fmt``, else the extension; None for streams/stdin (sniffed from content)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise DataError(
                f"{source_name(src)}: unknown format {fmt!r} (known: {', '.join(FORMATS)})"
            )
        return fmt
    if isinstance(src, (str, os.PathLike)) and str(src) != "-":
        ext = Path(src).suffix.lower()
        if ext not in _EXTENSIONS:
            raise DataError(
                f"{src}: cannot tell the format from the extension {ext!r}: use .jsonl, .json "
                f"or .csv, or pass the format explicitly"
            )
        return _EXTENSIONS[ext]
    return None


def _json_error(e: json.JSONDecodeError, name: str, first_line: int = 1) -> DataError:
    """A one-line error at the real ``file:line`` and column of a JSON syntax error.

    ``e.doc`` starts at line ``first_line`` of the file.  An error at the end of the text
    (a truncated document, ``Expecting value``) is placed just after its last non-blank
    character, where the text breaks off, not on the empty line after its final newline.
    """
    pos = e.pos
    if not e.doc[pos:].strip():
        pos = min(pos, len(e.doc.rstrip()))
    lineno = e.doc.count("\n", 0, pos) + 1
    colno = pos - (e.doc.rfind("\n", 0, pos) + 1) + 1
    return DataError(f"{name}:{first_line + lineno - 1}: malformed JSON: {e.msg} (column {colno})")


def _parse_json(text: str, name: str, lineno: int) -> Any:
    """One JSONL line (line ``lineno`` of ``name``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _json_error(e, name, lineno) from None
    except RecursionError:
        raise DataError(f"{name}:{lineno}: malformed JSON: nested too deeply") from None


@dataclass(frozen=True)
class _Limits:
    max_utterance_chars: int
    max_utterances: int

    def conversation(self, obj: Any, where: str, default_id: str) -> Conversation:
        return conversation_from_obj(
            obj, where, default_id=default_id,
            max_utterance_chars=self.max_utterance_chars, max_utterances=self.max_utterances,
        )


def _unique_ids(convs: Iterable[tuple[Conversation, str]]) -> Iterator[Conversation]:
    """Refuse a conversation id used twice: predictions and scores are keyed by id."""
    first: dict[str, str] = {}
    for conv, where in convs:
        if conv.id in first:
            raise DataError(
                f"{where} field 'id': duplicate id {conv.id!r} (first at {first[conv.id]})"
            )
        first[conv.id] = where
        yield conv


Lines = Iterable[tuple[int, str]]


def _iter_jsonl(lines: Lines, name: str, stem: str, limits: _Limits) -> Iterator[Conversation]:
    def convs() -> Iterator[tuple[Conversation, str]]:
        for lineno, line in lines:
            if line.strip():
                where = f"{name}:{lineno}"
                obj = _parse_json(line, name, lineno)
                yield limits.conversation(obj, where, f"{stem}:{lineno}"), where

    return _unique_ids(convs())


def _iter_json(lines: Lines, name: str, stem: str, limits: _Limits) -> Iterator[Conversation]:
    """A whole JSON document (a list of conversations, or one); JSON Lines if it is not one."""
    buffered = list(lines)
    if not any(line.strip() for _, line in buffered):
        return
    try:
        doc = json.loads("".join(line for _, line in buffered))
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several documents: JSON Lines in a .json file
            yield from _iter_jsonl(buffered, name, stem, limits)
            return
        raise _json_error(e, name, buffered[0][0]) from None
    except RecursionError:
        raise DataError(f"{name}: malformed JSON: nested too deeply") from None
    if isinstance(doc, dict):  # a single conversation
        doc = [doc]
    if not isinstance(doc, list):
        raise DataError(f"{name}: expected a list of conversations, got {_type_name(doc)}")
    yield from _unique_ids(
        ((limits.conversation(obj, f"{name}[{i}]", f"{stem}:{i}"), f"{name}[{i}]")
         for i, obj in enumerate(doc))
    )


def _iter_csv(lines: Lines, name: str, limits: _Limits) -> Iterator[Conversation]:
    current: str | None = None
    utterances: list[Utterance] = []
    started: dict[str, int] = {}
    for line, rec in iter_csv_records(lines, name, CSV_COLUMNS):
        where = f"{name}:{line}"
        dialogue = rec["dialogue_id"].strip()
        if not dialogue:
            raise DataError(f"{where} field 'dialogue_id': empty")
        if dialogue != current:
            if current is not None:
                yield Conversation(current, utterances)
            if dialogue in started:
                raise DataError(
                    f"{where} field 'dialogue_id': dialogue {dialogue!r} reappears after other "
                    f"rows (it started at line {started[dialogue]}); keep its rows together"
                )
            started[dialogue], current, utterances = line, dialogue, []
        if len(utterances) >= limits.max_utterances:
            from ..utils import plural  # here: iein.utils imports numpy, the readers do not

            raise DataError(
                f"{where}: dialogue {dialogue!r} has more than the limit of "
                f"{plural(limits.max_utterances, 'utterance')}"
            )
        label = rec.get(CSV_GOLD_COLUMN if CSV_GOLD_COLUMN in rec else CSV_LABEL_COLUMN, "").strip() or None
        utterances.append(make_utterance(rec["speaker"], rec["text"], label, where,
                                         max_utterance_chars=limits.max_utterance_chars))
    if current is not None:
        yield Conversation(current, utterances)


def _sniff(lines: Iterator[tuple[int, str]]) -> tuple[str, Iterator[tuple[int, str]]]:
    """JSONL if the first non-blank line starts with '{' or '[', else CSV."""
    head: list[tuple[int, str]] = []
    for item in lines:
        head.append(item)
        first = item[1].lstrip()
        if first:
            return ("jsonl" if first[0] in "{[" else "csv"), itertools.chain(head, lines)
    return "jsonl", iter(head)


def iter_conversations(
    path_or_stream: Source,
    fmt: str | None = None,
    *,
    max_utterance_chars: int = MAX_UTTERANCE_CHARS,
    max_utterances: int = MAX_UTTERANCES,
) -> Iterator[Conversation]:
    """Stream the conversations of a JSONL/CSV file, ``-`` (stdin) or an open stream.

    The format is ``fmt``, else the file extension, else (stdin, streams) guessed from the
    first line.  JSONL and CSV hold one conversation in memory at a time; ``json`` (a
    whole JSON document) is read at once.
    """
    name = source_name(path_or_stream)
    limits = _Limits(max_utterance_chars, max_utterances)
    fmt = format_of(path_or_stream, fmt)
    lines = read_lines(path_or_stream)
    if fmt is None:
        fmt, lines = _sniff(lines)
    if fmt == "csv":
        yield from _iter_csv(lines, name, limits)
    elif fmt == "json":
        yield from _iter_json(lines, name, _stem(path_or_stream), limits)
    else:
        yield from _iter_jsonl(lines, name, _stem(path_or_stream), limits)


def read_conversations(
    path: Source,
    fmt: str | None = None,
    *,
    max_utterance_chars: int = MAX_UTTERANCE_CHARS,
    max_utterances: int = MAX_UTTERANCES,
) -> list[Conversation]:
    """All conversations of a file, as a list (see :func:`iter_conversations`)."""
    return list(iter_conversations(path, fmt, max_utterance_chars=max_utterance_chars,
                                   max_utterances=max_utterances))


# --- writing ----------------------------------------------------------------------------

def _write(conversations: Iterable[Conversation], f: IO[str], fmt: str) -> None:
    if fmt == "csv":
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow((*CSV_COLUMNS, CSV_LABEL_COLUMN))
        for conv in conversations:
            for u in conv.utterances:
                writer.writerow((conv.id, u.speaker, u.text, u.label or ""))
        return
    for conv in conversations:
        utts: list[dict[str, str]] = []
        for u in conv.utterances:
            utt = {"speaker": u.speaker, "text": u.text}
            if u.label is not None:
                utt["label"] = u.label
            utts.append(utt)
        f.write(json.dumps({"id": conv.id, "utterances": utts}, ensure_ascii=False) + "\n")


def write_conversations(
    conversations: Iterable[Conversation], path_or_stream: str | os.PathLike[str] | IO[str],
    fmt: str | None = None,
) -> None:
    """Write conversations as JSONL (``.jsonl``/``.json``) or CSV, readable by the readers.

    ``-`` is stdout.  CSV cannot tell two adjacent conversations with the same id apart,
    so ids should be unique (the readers refuse duplicates).
    """
    if isinstance(path_or_stream, (str, os.PathLike)) and str(path_or_stream) != "-":
        fmt = format_of(path_or_stream, fmt)
        with open(path_or_stream, "w", encoding="utf-8", newline="") as f:
            _write(conversations, f, fmt or "jsonl")
        return
    stream = sys.stdout if isinstance(path_or_stream, (str, os.PathLike)) else path_or_stream
    _write(conversations, stream, fmt or "jsonl")


# --- labels -----------------------------------------------------------------------------

def check_labels(conversations: Iterable[Conversation], labels: Sequence[str], source: str) -> None:
    """Raise a DataError naming the first utterance whose label is not in ``labels``."""
    known = set(labels)
    for conv in conversations:
        for i, u in enumerate(conv.utterances):
            if u.label is not None and u.label not in known:
                raise DataError(
                    f"{source}: conversation {conv.id!r} utterance {i}: unknown label "
                    f"{u.label!r} (known: {', '.join(labels)})"
                )


def check_label_spellings(conversations: Sequence[Conversation], labels: Sequence[str], source: str) -> None:
    """Raise a DataError when two labels differ only in case or surrounding spaces (``Joy``
    and ``joy``): trained as they are, they would split one class in two without a word.
    The message names both spellings and the first utterance of each."""
    seen: dict[str, str] = {}
    for label in labels:
        key = label.strip().casefold()
        if key in seen:
            first, second = seen[key], label
            where = {lab: _first_use(conversations, lab) for lab in (first, second)}
            raise DataError(f"{source}: labels {first!r} ({where[first]}) and {second!r} ({where[second]}) differ "
                            "only in case or spaces; spell each class one way (or give --labels)")
        seen[key] = label


def _first_use(conversations: Sequence[Conversation], label: str) -> str:
    for conv in conversations:
        for i, u in enumerate(conv.utterances):
            if u.label == label:
                return f"first in conversation {conv.id!r} utterance {i}"
    return "given in --labels"
