"""``runs.jsonl``, the reproduction's record: reading it (repairing a torn last line), appending
to it, and the compact encodings of its lines.

The file is append-only, one JSON object a line, written by the driver only (append + flush +
fsync per line); :mod:`.runner` describes its four kinds of line.  A line's timing fields
(:data:`TIMING_FIELDS`) are what differs between two identical runs.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..errors import DataError

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


RUNS_FILE = "runs.jsonl"


#: Fields of a ``run`` line that depend on the machine's speed or the moment, not on the
#: computation (``history[*].seconds`` too): what differs between two identical runs.
TIMING_FIELDS: tuple[str, ...] = (
    "wall_seconds", "seconds_per_epoch", "finished_at", "session", "session_elapsed", "worker_pid",
)


#: Label ids as one character each; "-" is an unlabelled utterance.
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def encode_ids(ids: Iterable[int]) -> str:
    """Label ids -> one character each (``0-9a-z``); negative ids (unlabelled) -> ``-``."""
    out = []
    for i in ids:
        i = int(i)
        if i < 0:
            out.append("-")
        elif i < len(ALPHABET):
            out.append(ALPHABET[i])
        else:
            raise ValueError(f"label id {i} too large for the compact encoding (max {len(ALPHABET) - 1})")
    return "".join(out)


def decode_ids(text: str) -> list[int]:
    """Inverse of :func:`encode_ids` (``-`` -> -1)."""
    return [-1 if ch == "-" else ALPHABET.index(ch) for ch in text]


def encode_dialogues(per_dialogue: Sequence[Iterable[int]]) -> str:
    """One string for a split: each dialogue's ids encoded, dialogues separated by spaces."""
    return " ".join(encode_ids(d) for d in per_dialogue)


def decode_dialogues(text: str) -> list[list[int]]:
    return [decode_ids(part) for part in text.split(" ")] if text else []


def runs_path(out_dir: str | os.PathLike[str]) -> Path:
    return Path(out_dir) / RUNS_FILE


def read_records(path: str | os.PathLike[str], repair: bool = False, log: Log = _stderr) -> list[dict[str, Any]]:
    """All complete lines of ``runs.jsonl``.  A torn last line (no newline, or not JSON) is
    ignored, and with ``repair`` cut off the file so appending continues cleanly.  A broken
    line anywhere else is an error: that is not what a kill produces."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    good_end = len(data)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
        tail_complete = True
    else:
        tail_complete = False
    records: list[dict[str, Any]] = []
    offset = 0
    for lineno, raw in enumerate(lines, 1):
        last = lineno == len(lines)
        try:
            if last and not tail_complete:
                raise ValueError("no newline")
            rec = json.loads(raw.decode("utf-8"))
            if not isinstance(rec, dict) or "kind" not in rec:
                raise ValueError("not a record")
        except ValueError as exc:
            if not last:
                raise DataError(f"{path}:{lineno}: broken line ({exc}); the file was edited or corrupted") from None
            good_end = offset
            log(f"warning: {path}:{lineno}: ignoring a torn last line ({len(raw)} bytes) left by an interrupted run")
            break
        records.append(rec)
        offset += len(raw) + 1
    if repair and good_end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
    return records


def append_record(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line: a single ``write`` on an ``O_APPEND`` descriptor, then fsync."""
    line = (json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(line)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def strip_timing(record: dict[str, Any]) -> dict[str, Any]:
    """A ``run`` record without its timing fields: equal for two runs of the same computation."""
    out = {k: v for k, v in record.items() if k not in TIMING_FIELDS}
    if "history" in out:
        out["history"] = [{k: v for k, v in row.items() if k != "seconds"} for row in out["history"]]
    return out


def upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """Records written before models and encoders were components: IEIN's flat config held
    the encoder's GRU size, and lambda was a training setting."""
    if "arch" in record:
        return record
    rec = dict(record)
    model = dict(rec.get("model_config") or {})
    train = dict(rec.get("train_config") or {})
    enc = {}
    if "utterance_hidden" in model:
        enc["hidden"] = model.pop("utterance_hidden")
    if "lam" in train:
        model["lam"] = train.pop("lam")
    rec.update(arch="iein", encoder="glove-bigru", model_config=model, train_config=train, encoder_config=enc)
    return rec


__all__ = ["RUNS_FILE", "TIMING_FIELDS", "append_record", "decode_dialogues", "decode_ids", "encode_dialogues",
           "encode_ids", "read_records", "runs_path", "strip_timing", "upgrade_record"]
