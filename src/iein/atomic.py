"""Atomic file writes, so that an interrupted run (Ctrl-C, OOM kill, full disk) never leaves a
half-written checkpoint, config or results file where a complete one used to be: readers see
either the old file or the new one.  A temporary stranded by a killed writer is removed by the
next write of the same file (:func:`remove_stale_temporaries`)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_path", "remove_stale_temporaries"]

PathLike = str | os.PathLike[str]




def _umask() -> int:
    """The process umask, read without changing it where the platform allows.

    ``os.umask`` can only be read by setting it, which races with other threads creating
    files; Linux exposes it in /proc instead.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(path: Path) -> int:
    """Permissions the replaced file should get.

    ``mkstemp`` creates 0600 files; without this a results file rewritten atomically would
    silently become unreadable to the group.  Keep an existing file's mode, else use what a
    plain ``open(path, "w")`` would have produced.
    """
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (the directory entry); best effort, not all OSes allow it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: Marks a temporary of :func:`atomic_path`: ``.NAME.iein-tmp-PID-RANDOM.SUFFIX`` next to NAME.
_TMP_TAG = ".iein-tmp-"
#: A dead writer's temporary is only removed once it has not changed for this many seconds.
#: On one machine the PID check alone is decisive; the delay protects a writer whose PID
#: means nothing here (another container or host writing the same file on a shared folder).
STALE_AFTER_S = 10.0


def _tmp_pattern(name: str | None) -> re.Pattern[str]:
    """Names of :func:`atomic_path` temporaries for target ``name`` (any target if None)."""
    target = re.escape(name) if name is not None else r"(?P<name>.+)"
    return re.compile(rf"\.{target}{re.escape(_TMP_TAG)}(?P<pid>[0-9]+)-[a-z0-9_]{{8}}(?P<suffix>.*)")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still exists on this machine (a zombie counts as dead: it
    can no longer write).  Errs on the side of "alive" whenever it cannot tell."""
    if pid <= 0 or os.name != "posix":
        return True  # on Windows os.kill(pid, 0) would *terminate* the process: never try
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def remove_stale_temporaries(directory: PathLike, name: str | None = None) -> list[Path]:
    """Delete temporaries that killed writers left behind in ``directory``; return them.

    :func:`atomic_path` cleans up after itself, except when its process is killed outright
    (SIGKILL, OOM killer, power loss), which leaves ``.NAME.iein-tmp-PID-RANDOM.SUFFIX``.
    Such a file is removed only if its name has exactly that form (for target ``name``, or
    for any target if ``name`` is None), process PID no longer runs on this machine, and
    the file has not changed for :data:`STALE_AFTER_S` seconds.  A live writer's temporary
    and every file not made by :func:`atomic_path` are left alone.  Best effort: a file
    that cannot be inspected or removed is skipped, never an error.
    """
    directory = Path(directory)
    pattern = _tmp_pattern(name)
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None:
            continue
        target = name if name is not None else m.group("name")
        if m.group("suffix") != Path(target).suffix or pid_alive(int(m.group("pid"))):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if now - entry.stat(follow_symlinks=False).st_mtime < STALE_AFTER_S:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _tmp_in_same_dir(path: Path) -> tuple[int, Path]:
    """Create the temporary file next to ``path``, after removing stale ones of ``path``.

    The same directory guarantees the same filesystem, which is what makes ``os.replace``
    atomic.  The name is hidden (leading dot) so globbing for results does not pick up a
    stray temporary, keeps ``path``'s suffix at the end because some writers insist on one
    (``numpy.save`` appends ``.npy`` to names that lack it), and carries this process's PID
    so that the next write of ``path`` can tell a killed writer's leftover from a live
    writer's file (:func:`remove_stale_temporaries`).  Missing parent folders are created:
    losing an hour of results to a missing ``results/`` folder is not a feature.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}{_TMP_TAG}{os.getpid()}-", suffix=path.suffix
    )
    return fd, Path(tmp)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path`` atomically.

    For libraries that want a file name rather than bytes (``torch.save``, ``np.save``,
    ``DataFrame.to_parquet``)::

        with atomic_path(ckpt) as tmp:
            torch.save(state, tmp)

    If the block raises, the temporary file is removed and ``path`` is left untouched.  If
    the process is killed instead, the next ``atomic_path`` of the same ``path`` removes the
    leftover (see :func:`remove_stale_temporaries`).  The temporary file already exists
    (empty) when the block starts.  The writer must write that file itself: a library that
    makes its own temporary next to it (``safetensors.torch.save_file`` does) would leave
    that one behind when killed; hand such libraries' bytes to :func:`atomic_write_bytes`.
    """
    path = Path(path)
    fd, tmp = _tmp_in_same_dir(path)
    os.close(fd)
    try:
        yield tmp
        # The writer may have closed the file without fsync; make the data durable before
        # the rename makes it visible, or a crash could expose an empty/partial file.
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _final_mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old content or the new, never a mix
    (temporary file in the same directory, fsync, ``os.replace``; see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Atomically write ``text`` (UTF-8 by default, newlines untranslated) to ``path``."""
    atomic_write_bytes(path, text.encode(encoding))


def _json_default(obj: Any) -> Any:
    """Let numpy scalars/arrays through ``json``; metrics and configs often carry them."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def atomic_write_json(path: PathLike, obj: Any, indent: int | None = 2) -> None:
    """Atomically write ``obj`` as JSON (UTF-8, trailing newline) to ``path``.

    The object is serialised before anything touches the disk, so an unserialisable value
    raises without creating even a temporary file.  NaN/Infinity are refused
    (``allow_nan=False``) because they are not JSON and break other readers.
    """
    text = json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False,
                      default=_json_default)
    atomic_write_text(path, text + "\n")


