"""The files a run keeps beside its checkpoint while it trains, and the resume state's
format: what ``resume=True`` reads back (checked before use) and what each epoch writes.

* ``<out stem>.best.safetensors``: the best model so far (a normal checkpoint);
* ``<out stem>.resume.pt``: the state after the last finished epoch (or, with
  ``resume_every_s``, after a step inside the epoch that is under way), ``{format, sha256,
  payload}`` where the payload is the state's own ``torch.save`` bytes, so a flipped bit
  anywhere is caught before any of it is used.  It holds tensors and plain values only and is
  read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickletools
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import CheckpointError, ConfigError
from ..models.base import ConversationModel
from . import distributed
from .early_stopping import EarlyStopping

__all__ = ["RESUME_FORMAT", "UNCHECKED_RESUME_FORMAT", "side_files", "rng_state", "set_rng_state",
           "load_resume_state", "read_resume_state", "check_resume_state", "save_resume_state"]


def side_files(out: str | Path) -> tuple[Path, Path]:
    """``(best-so-far checkpoint, resume state)`` of a run writing to ``out``."""
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}.best.safetensors"), out.with_name(f"{stem}.resume.pt")


def rng_state(rng: np.random.Generator, device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": json.dumps(rng.bit_generator.state),
             "python": json.dumps(random.getstate()), "numpy_global": json.dumps(
                 [np.random.get_state()[0], np.random.get_state()[1].tolist(), *np.random.get_state()[2:]])}
    if device.type == "cuda":  # dropout on a GPU draws from the device's generator
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(states: list[dict[str, Any]], rng: np.random.Generator, seed: int,
                   ctx: distributed.Context) -> None:
    """Every RNG as saved after the last finished epoch.  The data order (numpy) is rank 0's
    on every process; each process gets back its own torch stream (dropout) when the
    number of processes is unchanged, else a fresh one derived from the seed and the rank."""
    state = states[0]
    own = states[ctx.rank] if ctx.rank < len(states) else None
    if own is not None:
        torch.set_rng_state(own["torch"])
        if ctx.device.type == "cuda" and "cuda" in own:
            torch.cuda.set_rng_state(own["cuda"], ctx.device)
    else:  # resumed with more processes than saved the state
        distributed.seed_rank(seed, ctx)
    rng.bit_generator.state = json.loads(state["numpy"])
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    g = json.loads(state["numpy_global"])
    np.random.set_state((g[0], np.asarray(g[1], dtype=np.uint32), *g[2:]))


#: Version of the resume-state layout (2: one RNG state per process; 3: the state's bytes
#: inside a checksummed envelope).
RESUME_FORMAT = "iein-resume/3"
#: Read for states written before the envelope (not verifiable: train() says so).
UNCHECKED_RESUME_FORMAT = "iein-resume/2"
START_OVER = "remove it (or rerun without --resume, with --force) to start over"


def _torch_load(source: Any) -> Any:
    """``torch.load`` of plain tensors and containers only; torch's own warnings (e.g. about
    a pickle it refuses) are not shown, since the caller turns any failure into one line."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(source, map_location="cpu", weights_only=True)


def holds_pickle(path: Path) -> bool:
    """Whether ``path`` is a torch (zip) file or a well-formed pickle stream.  torch reports
    any unpickling failure, random bytes included, as "Weights only load failed"; only a file
    that parses as a pickle holds objects iein refused, the rest is just unreadable.
    ``pickletools.genops`` reads the opcodes without running any of them."""
    if zipfile.is_zipfile(path):
        return True
    try:
        with open(path, "rb") as f:
            for _ in pickletools.genops(f):
                pass
    except Exception:  # noqa: BLE001 - not a pickle, whatever the parse error
        return False
    return True


def load_resume_state(path: Path, identity: str) -> dict[str, Any]:
    """A resume state (:func:`read_resume_state`) whose identity is this run's; errors are
    one line."""
    state = read_resume_state(path)
    if state.get("identity") != identity:
        raise CheckpointError(f"{path}: resume state is from a different configuration, data or iein "
                              "version; remove it (or drop --resume) to start over")
    return state


def read_resume_state(path: Path) -> dict[str, Any]:
    """A resume state, its checksum verified; errors are one line.  The envelope
    ``{format, sha256, payload}`` holds the state's own ``torch.save`` bytes, so a flipped
    bit anywhere in the weights, the optimiser, the RNG states or the history is caught
    before any of it is used."""
    try:
        outer = _torch_load(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one user-facing error
        if "Weights only load failed" in str(exc) and holds_pickle(path):
            raise CheckpointError(f"{path}: not an iein resume state: it holds pickled objects, which iein never "
                                  f"loads; {START_OVER}") from None
        raise CheckpointError(f"{path}: unreadable resume state (corrupted or truncated?): "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; {START_OVER}") from None
    found = outer.get("format") if isinstance(outer, dict) else None
    if found == RESUME_FORMAT:
        payload = outer.get("payload")
        if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8 or payload.dim() != 1:
            raise CheckpointError(f"{path}: corrupted resume state (no payload); {START_OVER}")
        data = payload.numpy().tobytes()
        if hashlib.sha256(data).hexdigest() != outer.get("sha256"):
            raise CheckpointError(f"{path}: resume state checksum mismatch (the file is corrupted); {START_OVER}")
        try:
            state = _torch_load(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{path}: unreadable resume state: {exc}; {START_OVER}") from None
    elif found == UNCHECKED_RESUME_FORMAT:
        state = dict(outer, unverified=True)
    else:
        raise CheckpointError(f"{path}: not an iein resume state" + (f" of this version ({found}, this iein "
                              f"reads {RESUME_FORMAT}); remove it to start over" if found else ""))
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: corrupted resume state (not a mapping); {START_OVER}")
    return state


def check_resume_state(out: str | Path, resume: bool, force: bool) -> None:
    """A run writing to ``out`` whose resume state exists (a killed run) must say what to do
    with it: continue (``resume``) or start over (``force``, which discards it)."""
    state = side_files(out)[1]
    if state.is_file() and not resume and not force:
        raise ConfigError(f"{state} holds the state of a killed run: pass --resume to continue it, or --force "
                          "to start over (the state is then discarded)")


def save_resume_state(path: Path, identity: str, model: ConversationModel, optim: torch.optim.Optimizer,
                 sched: torch.optim.lr_scheduler.LRScheduler | None,
                 best_state: dict[str, torch.Tensor] | None, history: list[dict[str, Any]],
                 stopper: EarlyStopping, rng_states: list[dict[str, Any]],
                 partial: dict[str, Any] | None = None) -> None:
    """The state after an epoch (weights, optimiser, scheduler, best model, history, early
    stopping, every process's RNG), inside the checksummed envelope, written atomically.
    ``partial``: where inside an epoch the state was taken (its number, the steps done, the
    loss sums and seconds so far); its RNG state's data order is then the epoch's start, so
    the resumed run draws the same order and skips the steps done."""
    state = {
        "format": RESUME_FORMAT, "identity": identity,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optim.state_dict(), "best_model": best_state,
        "scheduler": sched.state_dict() if sched is not None else None,
        "history": json.dumps(history), "best_score": stopper.best_score, "best_epoch": stopper.best_epoch,
        "rng": rng_states,  # one per process (rank 0's first)
        "partial": json.dumps(partial) if partial is not None else None,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    envelope = {"format": RESUME_FORMAT, "sha256": hashlib.sha256(data).hexdigest(),
                "payload": torch.frombuffer(bytearray(data), dtype=torch.uint8)}
    with atomic_path(path) as tmp:
        torch.save(envelope, tmp)
