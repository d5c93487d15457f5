"""Small utilities shared by training, evaluation and the CLI (atomic file writes are
:mod:`iein.atomic`).

* Reproducibility helpers (:func:`set_seed`, :func:`torch_threads`).
* Provenance and resource numbers for run records (:func:`sha256_file`, :func:`peak_rss_mb`).

``torch`` is imported lazily, inside the functions that need it, so that importing this
module from a data-only command stays fast.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "set_seed",
    "sha256_file",
    "tensor_sha256",
    "peak_rss_mb",
    "torch_threads",
    "plural",
]

PathLike = str | os.PathLike[str]


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


def tensor_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: the identity of
    a set of weights (a checkpoint's checksum, the key of an exported encoder)."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


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
