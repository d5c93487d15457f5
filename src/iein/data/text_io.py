"""Helpers shared by every reader: strict UTF-8 lines, CSV records, labels, text repair.

They live in one place so that every reader reports bad input the same way: a one-line
:class:`~iein.errors.DataError` that names the file, the line and the field at fault.
"""
from __future__ import annotations

import csv
import os
import re
import sys
from contextlib import contextmanager
from typing import IO, Iterable, Iterator, Sequence, Union

from ..errors import DataError, where
from .conversation import Utterance

#: A file path, ``"-"`` for stdin, or an already opened (binary or text) stream.
Source = Union[str, "os.PathLike[str]", IO[bytes], IO[str]]


def source_name(src: Source) -> str:
    """A short name for messages: the path as given, ``<stdin>``, or the stream's name."""
    if isinstance(src, (str, os.PathLike)):
        return "<stdin>" if str(src) == "-" else str(src)
    name = getattr(src, "name", None)
    return str(name) if isinstance(name, str) else "<stream>"


@contextmanager
def open_source(src: Source) -> Iterator[IO[bytes] | IO[str]]:
    """Open a path in binary mode (closed afterwards); pass streams and stdin through."""
    if isinstance(src, (str, os.PathLike)):
        if str(src) == "-":
            yield sys.stdin.buffer
            return
        try:
            f = open(src, "rb")
        except OSError as e:
            raise DataError(f"{src}: cannot open: {e.strerror or e}") from None
        with f:
            yield f
    else:
        yield src


#: Leading bytes of compressed files, which are not text (named rather than decoded).
COMPRESSED_KINDS = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ": "xz",
                    b"\x28\xb5\x2f\xfd": "zstd"}
COMPRESSED = tuple(COMPRESSED_KINDS)


def decode_lines(raw_lines: Iterable[bytes | str], name: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` with line endings kept, decoding bytes as strict UTF-8.

    One line at a time, so memory stays bounded; a UTF-8 byte-order mark is dropped.
    Non-UTF-8 bytes are an error naming the line (guessing an encoding would silently
    corrupt text, e.g. turn cp1252 quotes into other characters).
    """
    for lineno, raw in enumerate(raw_lines, start=1):
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if lineno == 1 and raw.startswith(COMPRESSED):
                    kind = next(k for magic, k in COMPRESSED_KINDS.items() if raw.startswith(magic))
                    raise DataError(f"{name}: a {kind} file, not text: decompress it first") from None
                bad = raw[e.start]
                hint = " (looks like Windows-1252)" if 0x80 <= bad <= 0x9F else ""
                raise DataError(
                    f"{name}:{lineno}: not valid UTF-8: byte 0x{bad:02x} at column "
                    f"{e.start + 1}{hint}; re-save the file as UTF-8"
                ) from None
        else:
            line = raw
        if lineno == 1 and line.startswith("\ufeff"):
            line = line[1:]
        yield lineno, line


def read_lines(src: Source) -> Iterator[tuple[int, str]]:
    """Strict UTF-8 ``(line number, text)`` pairs of a path, ``-`` or stream."""
    name = source_name(src)
    with open_source(src) as f:
        yield from decode_lines(f, name)


def iter_csv_records(
    lines: Iterable[tuple[int, str]], name: str, required: Sequence[str]
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(first line of the record, {column: value})`` for each CSV row.

    Checks that the header holds every ``required`` column and that each row has as many
    fields as the header; blank lines are skipped.  Quoted fields may span lines: the line
    number reported is the one where the record starts.
    """
    numbered = iter(lines)
    current = [0]

    def text_only() -> Iterator[str]:
        for lineno, line in numbered:
            current[0] = lineno
            yield line

    reader = csv.reader(text_only())
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{name}: empty file (expected a CSV header)")
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(
                f"{name}:1: missing column {missing[0]!r} (found: {', '.join(header)})"
            )
        start = current[0] + 1
        for row in reader:
            if row:
                if len(row) != len(header):
                    from ..utils import plural  # here: iein.utils imports numpy, the readers do not

                    raise DataError(
                        f"{name}:{start}: {plural(len(row), 'field')}, but the header has {len(header)}"
                    )
                yield start, dict(zip(header, row))
            start = current[0] + 1
    except csv.Error as e:
        raise DataError(f"{name}:{current[0]}: malformed CSV: {e}") from None


def parse_int(value: str, name: str, line: int, field: str) -> int:
    """An integer field, or a DataError naming it."""
    try:
        return int(value.strip())
    except ValueError:
        raise DataError(f"{where(name, line, field)}: not an integer: {value!r}") from None


def parse_label(value: str, labels: Sequence[str], name: str, line: int, field: str) -> str:
    """A label of a fixed label set (case and surrounding spaces ignored)."""
    label = value.strip().lower()
    if label not in labels:
        raise DataError(
            f"{where(name, line, field)}: unknown label {value!r} (known: {', '.join(labels)})"
        )
    return label


def empty_notes(splits: Iterable[str]) -> dict[str, list[str]]:
    return {split: [] for split in splits}


def group_utterances(
    rows: Iterable[tuple[str, int, int, Utterance]], name: str
) -> dict[str, list[Utterance]]:
    """Group ``(dialogue key, utterance number, line, utterance)`` rows into dialogues.

    Dialogues keep their order of first appearance; utterances are ordered by their number
    (corpora such as MELD number them with gaps, and files need not be sorted).  The same
    utterance number twice in a dialogue is an error naming both lines.
    """
    dialogues: dict[str, dict[int, tuple[int, Utterance]]] = {}
    for key, number, line, utt in rows:
        seen = dialogues.setdefault(key, {})
        if number in seen:
            raise DataError(
                f"{name}:{line}: utterance {number} of dialogue {key!r} already given at "
                f"line {seen[number][0]}"
            )
        seen[number] = (line, utt)
    return {
        key: [utt for _, (_, utt) in sorted(utts.items())] for key, utts in dialogues.items()
    }


# --- cp1252 mojibake repair -------------------------------------------------------------
#
# A UTF-8 file once decoded as cp1252 (and saved again) turns "’" (e2 80 99) into "â€™";
# a cp1252 file decoded as latin-1 turns "’" (0x92) into the control character U+0092.
# Both are reversible; we repair only spans that decode cleanly, so real text is kept.

def _cp1252_char(byte: int) -> str:
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d are undefined in cp1252
        return chr(byte)


_CONT = "".join(re.escape(_cp1252_char(b)) for b in range(0x80, 0xC0))
_MOJIBAKE = re.compile(
    f"[\u00c2-\u00df][{_CONT}]|[\u00e0-\u00ef][{_CONT}]{{2}}|[\u00f0-\u00f4][{_CONT}]{{3}}"
)
_C1 = re.compile("[\u0080-\u009f]")


def _unmangle(match: re.Match[str]) -> str:
    span = match.group(0)
    raw = bytearray()
    for ch in span:
        try:
            raw += ch.encode("cp1252")
        except UnicodeEncodeError:
            raw.append(ord(ch))  # an undefined cp1252 byte kept as U+0081 etc.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return span


def _c1_to_cp1252(match: re.Match[str]) -> str:
    return _cp1252_char(ord(match.group(0)))


def repair_mojibake(text: str) -> str:
    """Undo cp1252 mangling (``â€™`` -> ``’``, ``\\x92`` -> ``’``); never raises."""
    if not text.isascii():
        text = _MOJIBAKE.sub(_unmangle, text)
        text = _C1.sub(_c1_to_cp1252, text)
    return text
