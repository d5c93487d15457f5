"""Small utilities shared by training, evaluation and the CLI.

* Atomic file writes, so that an interrupted run (Ctrl-C, OOM kill, full disk) never leaves a
  half-written checkpoint, config or results file where a complete one used to be: readers
  see either the old file or the new one.  A temporary stranded by a killed writer is removed
  by the next write of the same file (:func:`remove_stale_temporaries`).
* Reproducibility helpers (:func:`set_seed`, :func:`torch_threads`).
* Provenance and resource numbers for run records (:func:`sha256_file`, :func:`peak_rss_mb`).

``torch`` is imported lazily, inside the functions that need it, so that importing this
module (e.g. for an atomic JSON write in a data-only command) stays fast.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_path",
    "remove_stale_temporaries",
    "set_seed",
    "sha256_file",
    "peak_rss_mb",
    "torch_threads",
    "plural",
]

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------------------
# atomic writes


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


def _pid_alive(pid: int) -> bool:
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
        if m.group("suffix") != Path(target).suffix or _pid_alive(int(m.group("pid"))):
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


# --------------------------------------------------------------------------------------------
# reproducibility


def set_seed(seed: int) -> None:
    """Seed every RNG a run uses (python ``random``, numpy, torch CPU and CUDA).

    Also asks torch for deterministic algorithms with ``warn_only=True``: ops that have a
    deterministic variant use it, ops that do not only warn instead of failing, so this is
    safe to call in every run.  (Its only cost is a one-off import of ``torch._inductor``,
    about a second, which torch's public API does to keep the compiler in step.)  cuDNN autotuning is turned off for the same reason (it picks
    kernels by timing, which varies run to run), and ``CUBLAS_WORKSPACE_CONFIG`` is set (if
    the user has not set it) because cuBLAS needs it for deterministic matmuls on CUDA>=10.2.
    ``PYTHONHASHSEED`` cannot be changed from inside a running interpreter and is left alone;
    nothing in iein depends on set/dict-of-str iteration order.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < 2**32:
        # numpy's legacy seeding only accepts this range; reject rather than wrap silently.
        raise ValueError(f"seed must be in 0..2**32-1, got {seed}")

    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(n)``, restoring the previous count after.

    Used to pin CPU inference/training to a thread budget (e.g. in tests or next to other
    jobs) without leaking the setting into the rest of the process.  ``None`` leaves the
    setting alone, so a CLI ``--threads`` option can be passed straight through.
    """
    import torch

    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"thread count must be a positive int, got {n!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------------------------
# provenance and resources


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in ``chunk``-byte pieces so large checkpoints fit in memory.

    Recorded next to results to tie them to the exact data and checkpoint files used.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    From ``getrusage(RUSAGE_SELF).ru_maxrss``, which Linux reports in KiB (macOS in bytes,
    handled too).  Children are not included.  ``resource`` does not exist on Windows, where
    NaN is returned rather than failing a run over a diagnostic number.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return float("nan")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        return maxrss / (1024 * 1024)
    return maxrss / 1024


# --------------------------------------------------------------------------------------------
# messages


def plural(n: int, noun: str, plural_noun: str | None = None) -> str:
    """``n`` and the noun in the right number, for counts in messages: ``plural(1,
    "conversation")`` is ``"1 conversation"``, ``plural(0, "label change")`` is ``"0 label
    changes"``; ``plural_noun`` for irregular plurals (``plural(2, "process", "processes")``)."""
    return f"{n} {noun if n == 1 else (plural_noun or noun + 's')}"


# --------------------------------------------------------------------------------------------
# CPU thread policy


def default_threads() -> int:
    """Intra-op threads when the user gives none: the cores this process may use, at most 2
    (the GRUs gain nothing from more, measured in bench/bench_threads.py)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))
