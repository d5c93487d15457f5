"""One run of the reproduction, in a worker process (or in the driver with ``workers=0``).

A worker is set up once (:func:`init_worker`: torch threads, an empty data cache, and its death
with the driver), then trains each run it is handed with :func:`run_one`, which loads and
prepares a dataset once per worker and keeps it for all its runs.  The same function runs a
Ray task (:mod:`.ray_backend`).  Stage-1 files follow one naming rule (:func:`stage1_path`).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .. import __version__
from .datasets import load_dataset
from .plan import RunSpec
from .records import encode_dialogues


_WORKER: dict[str, Any] = {"options": {}, "cache": {}}


def worker_options() -> dict[str, Any]:
    """The options this worker process was set up with ({} before :func:`init_worker`)."""
    return _WORKER["options"]


#: How often a worker checks that its driver is still there (the fallback where the kernel
#: cannot be asked to kill it with its parent).
PARENT_POLL_S = 0.5


def kill_me_with_parent() -> bool:
    """Linux: ask the kernel to SIGKILL this process when its parent dies, even by SIGKILL.
    False where that is not available (other systems, a sandbox refusing the call).

    The kernel's "parent" is the *thread* that started the process: the pool starts its
    workers from the driver's thread (``submit``), which outlives the pool."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl.restype = ctypes.c_int
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        return prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def watch_parent(parent_pid: int, interval: float = PARENT_POLL_S) -> threading.Thread:
    """A daemon thread that ends this process as soon as ``parent_pid`` is no longer its
    parent (an orphan is re-parented to init or a subreaper).  Without it, an orphaned worker
    on a system without PR_SET_PDEATHSIG would wait forever on the pool's call queue: it
    holds both ends of that pipe itself, so it never sees end-of-file."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)  # the driver is gone: nobody would record this worker's results

    thread = threading.Thread(target=watch, name="iein-watch-parent", daemon=True)
    thread.start()
    return thread


def die_with_parent(parent_pid: int | None) -> None:
    """End this worker within a fraction of a second of its driver's death, however the
    driver died, so a killed ``reproduce`` leaves no orphan training away on the cores (nor
    keeps the multiprocessing resource tracker, which waits for every worker, alive).

    The kernel's parent-death signal is immediate; the polling thread is the fallback where
    that is unavailable, and costs nothing where it is not.  The final check covers a
    driver that died while this worker was still starting (before either existed)."""
    if parent_pid is None:
        return
    kill_me_with_parent()
    watch_parent(parent_pid)
    if os.getppid() != parent_pid:
        os._exit(1)


def init_worker(options: dict[str, Any], in_process: bool = False) -> None:
    """Pool initializer (and a Ray task's set-up): die with the parent, start an empty data
    cache.  ``in_process`` (workers=0): only the options and the cache, the caller's process
    keeps its settings (each training pins its own thread count anyway)."""
    _WORKER["options"] = dict(options)
    _WORKER["cache"] = {}
    if in_process:
        return
    die_with_parent(options.get("parent_pid"))
    threads = int(options.get("threads_per_worker", 1))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def _prepared(dataset: str, encoder: str, encoder_config: dict[str, Any]) -> Any:
    """The dataset's PreparedData for an encoder, loaded and featurized once per worker
    process (shared by encoders whose featurizers agree, e.g. glove-bigru and glove-cnn)."""
    from ..encoders.registry import get_encoder_class
    from ..training.trainer import prepare

    cache = _WORKER["cache"]
    key = (dataset, get_encoder_class(encoder).features_key(encoder_config))
    if key not in cache:
        opts = _WORKER["options"]
        corpus = load_dataset(dataset, opts.get("data_root"), bool(opts.get("quick")))
        cache[key] = prepare(corpus, opts.get("embeddings"), encoder, encoder_config, log=lambda _msg: None)
    return cache[key]


def run_one(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Train one planned run and return its ``run`` record (without session fields)."""
    import numpy as np
    import torch

    from ..evaluation.evaluate import evaluate_model, predict_steps
    from ..training.pipeline import run_experiment
    from ..training.resume_state import side_files
    from ..utils import torch_threads

    spec = RunSpec.from_dict(spec_dict)
    opts = _WORKER["options"]
    threads = int(opts.get("threads_per_worker", 1))
    t0 = time.perf_counter()
    with torch_threads(threads):
        planned = spec.experiment(threads)
        stage1_dir = Path(opts.get("stage1_dir") or "stage1")
        out = provided_stage1(spec, planned, stage1_dir)
        # stage 1 (the dataset's CNN of the run's seed under the two-stage baselines) is shared
        # by the runs that freeze it; selection is on dev, as for every run, and test is not looked at
        done = run_experiment(planned, lambda enc, cfg: _prepared(spec.dataset, enc, cfg), dataset=spec.dataset,
                              out=out, stage1_dir=stage1_dir, quick=spec.quick,
                              resume=planned.stage1() is not None or (out is not None and side_files(out)[1].is_file()),
                              progress=False, evaluate_test=False)
        result, exp, data = done.result, done.experiment, done.data
        stage1 = done.stage1.record(planned.stage1()) if done.stage1 is not None else None
        cfg = exp.train
        test_set = data.splits["test"]
        preds = predict_steps(result.model, test_set, cfg.eval_batch_size)
        exclude = (cfg.exclude_label,) if cfg.exclude_label else ()
        test = evaluate_model(result.model, test_set, data.labels, exclude, cfg.eval_batch_size, preds=preds)
    model_cfg = exp.model
    n_steps = preds[0].ids.shape[0] if preds else 0
    step_strings = [encode_dialogues([p.ids[s] for p in preds]) for s in range(n_steps)]
    return {
        "kind": "run", "key": spec.key, "dataset": spec.dataset, "preset": spec.preset,
        "variant": spec.variant, "iterations": spec.iterations, "seed": spec.seed, "quick": spec.quick,
        "roles": list(spec.roles), "overrides": list(spec.overrides),
        "arch": exp.arch, "encoder": exp.encoder, "encoder_config": exp.encoder_config,
        "model_config": model_cfg, "train_config": cfg.to_dict(),
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "history": result.history,
        "stopped_by": result.stopped_by, "dev": result.dev, "test": test,
        "test_predictions": {"dialogues": [c.id for c in test_set], "steps": step_strings},
        "embeddings": data.provenance, "coverage": data.coverage, "data_checksums": data.data_checksums,
        "versions": {"iein": __version__, "torch": torch.__version__, "numpy": np.__version__},
        "seconds_per_epoch": round(result.seconds_per_epoch, 3),
        "wall_seconds": round(time.perf_counter() - t0, 3), "worker_pid": os.getpid(),
        **({"stage1": stage1} if stage1 is not None else {}),
    }


def provided_stage1(spec: RunSpec, planned: Any, folder: Path) -> Path | None:
    """The stage-1 file that run ``spec`` itself trains, or None.  A run of a preset that
    other presets train first (the CNN row, frozen under the two-stage baselines of its seed)
    writes its model where those runs look for their stage 1, so they reuse it rather than
    train the same model again, and a killed one resumes from its state there."""
    from ..training.config import get_preset, is_stage1

    # a quick run's stage 1 is shrunk otherwise than its CNN row: nothing to share
    if (spec.quick or planned.stage1() is not None or not is_stage1(spec.preset)
            or planned.encoder != get_preset(spec.preset).encoder):
        return None
    return stage1_path(spec, planned, folder)


def stage1_path(spec: RunSpec, first: Any, folder: Path) -> Path:
    """Where a run's stage-1 model lives (:func:`iein.training.pipeline.stage1_file`)."""
    from ..training.pipeline import stage1_file

    return stage1_file(first, spec.dataset, folder, spec.quick)


__all__ = ["PARENT_POLL_S", "die_with_parent", "init_worker", "kill_me_with_parent", "provided_stage1", "run_one",
           "stage1_path", "watch_parent", "worker_options"]
