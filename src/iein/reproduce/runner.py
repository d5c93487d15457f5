"""Run the reproduction plan in a process pool, resumably, into ``DIR/runs.jsonl``.

``runs.jsonl`` is append-only, one JSON object a line, written by the parent process only
(append + flush + fsync per line), which holds a lock on the folder (``DIR/.lock``) so that
no second driver appends at the same time.  Four kinds of line:

* ``dataset``  -- once per dataset: label set, data-file sha256s, split fingerprints and
  sizes, the test dialogues' ids and gold labels, and the case-study dialogue of the
  paper's Table 5 (found in the data by its utterances);
* ``plan``     -- once per invocation: the run keys, seed counts, presets, baselines,
  ``--only``, ``--encoder`` and ``--set``, the time estimate, machine, versions;
* ``run``      -- one per finished training: configuration, seed, dev and test scores of
  every step, per-class F1, confusion matrix, corrections, and the test predictions of
  every step (compact, see :func:`encode_ids`) with the dialogue ids;
* ``session_end`` -- when an invocation finishes (absent when it was killed).

A restart reads the file, skips every finished key and runs the rest; a torn last line
(the process was killed while writing it) is cut off.  Each worker process loads and
prepares a dataset once and keeps it for all its runs; each is pinned to
``threads_per_worker`` torch threads.

The report (:mod:`.report`) reads this file and nothing else.
"""
from __future__ import annotations

import contextlib
import os
import platform
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Iterator, Sequence

from .. import __version__
from ..errors import ConfigError, DataError
from ..utils import plural
from ..training.config import BASELINES
from .plan import (QUICK_SEEDS, RunSpec, build_plan, canonical_overrides, estimate, expand_datasets,
                   main_iterations, DEFAULT_SEEDS_ABLATION, DEFAULT_SEEDS_BASELINES, DEFAULT_SEEDS_MAIN)
from .datasets import dataset_record, load_dataset
from .records import Log, append_record, read_records, runs_path, upgrade_record
from .worker import init_worker, run_one, stage1_path



def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine_info() -> dict[str, Any]:
    import numpy
    import torch

    return {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": numpy.__version__, "iein": __version__,
    }


# --------------------------------------------------------------------------------------------
# the driver


def default_workers() -> int:
    """One worker per core this process may use (cgroup/affinity aware where possible)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1




def _check_done_runs(path: Path, plan: Sequence[RunSpec], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The finished runs by key; a planned key whose finished run had other settings (a preset
    changed since) is refused, naming the run and the setting."""
    done = {r["key"]: r for r in records if r["kind"] == "run"}
    for spec in plan:
        if spec.key in done:
            why = same_config(done[spec.key], spec)
            if why:
                raise ConfigError(f"{path}: run {spec.key} was trained with other settings ({why}); "
                                  "use a new --out directory")
    return done


def same_config(record: dict[str, Any], spec: RunSpec) -> str | None:
    """Why a finished run does not match the planned one (None when it does).  The thread
    count is not part of the comparison: it changes speed, not the experiment.  A setting
    the record lacks (added to the code later) counts as equal when the plan leaves it at
    its default."""
    import dataclasses

    from ..encoders.registry import get_encoder_class
    from ..models.registry import get_model_class
    from ..training.config import SPEED_ONLY_FIELDS, TrainConfig

    record = upgrade_record(record)
    exp = spec.experiment()
    first = exp.stage1()
    done_first = record.get("stage1")
    if (first is None) != (done_first is None):
        how = "two-stage" if first is not None else "end to end"
        return f"the plan trains {spec.key} {how}, the recorded run did not"
    encoder = done_first["encoder"] if done_first else record.get("encoder")
    if (record.get("arch"), encoder) != (exp.arch, exp.encoder):
        return f"model differs: {record.get('arch')} on {encoder} -> {exp.arch} on {exp.encoder}"
    checks = [("model", record.get("model_config") or {}, exp.model, get_model_class(exp.arch).config_class),
              ("training", record.get("train_config") or {}, exp.train.to_dict(), TrainConfig)]
    if first is None:
        checks.append(("encoder", record.get("encoder_config") or {}, exp.encoder_config,
                       get_encoder_class(exp.encoder).config_class))
    else:  # the stage-1 file's name holds the hash of its whole experiment
        want = stage1_path(spec, first, Path(".")).name
        if Path(done_first["checkpoint"]).name != want:
            return f"stage 1 differs: {Path(done_first['checkpoint']).name} -> {want}"
    for what, have, want, cls in checks:
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        diff = []
        for k in sorted(set(have) | set(want)):
            if k in SPEED_ONLY_FIELDS:
                continue
            h = have.get(k, defaults.get(k, dataclasses.MISSING))
            w = want.get(k, defaults.get(k, dataclasses.MISSING))
            if h != w:
                diff.append(f"{k} {h!r} -> {w!r}")
        if diff:
            return f"{what} settings differ: {', '.join(diff)}"
    return None


LOCK_FILE = ".lock"


@contextlib.contextmanager
def driver_lock(out: Path, log: Log = _stderr) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (``out/.lock``) while this process drives a
    reproduction there.

    Two drivers on one folder would both repair and append to ``runs.jsonl`` and train the
    same keys twice, so the second is refused with a one-line error while the first is
    alive.  The kernel drops the lock when its holder dies, however it dies: a killed run
    never leaves a stale lock behind.  Workers need no lock: they never write
    ``runs.jsonl`` (they return records through the pool; only the driver appends) and die
    with their driver (:func:`die_with_parent`).  The lock file stays (deleting it could
    let two drivers lock two different files); it holds the holder's PID for the message.
    Without ``fcntl`` (Windows), or on a filesystem that refuses locks, there is no lock
    (with a warning in the latter case).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by workers
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise ConfigError(f"{out}: another `iein reproduce` ({who}) is running on this folder; "
                              "wait for it to finish or stop it, then rerun to resume") from None
        except OSError as exc:  # e.g. ENOLCK on an NFS mount without a lock daemon
            log(f"warning: {out}: cannot lock the folder ({exc.strerror}); "
                "make sure no other `iein reproduce` writes to it")
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _start_resource_tracker_quietly() -> None:
    """Start multiprocessing's resource tracker, if this process has none yet, without its
    report of "leaked" semaphores.

    The pool's queues use named POSIX semaphores; the driver registers them with the
    tracker and unregisters them when it exits cleanly.  When the driver is SIGKILLed, the
    tracker (once the last worker is gone) unlinks them itself, which is its job, and says
    so with a UserWarning ("There appear to be 5 leaked semaphore objects to clean up at
    shutdown") printed on the terminal after the kill: an alarm about nothing, since no
    semaphore is left behind.  The tracker takes its warning filters from ``sys.warnoptions``
    when it is launched, so its own ``resource_tracker: ...`` warnings are filtered there and
    nowhere else; a tracker already running (started by other code) is left as it is.
    """
    if os.name != "posix":
        return
    from multiprocessing import resource_tracker

    saved = list(sys.warnoptions)
    sys.warnoptions.append("ignore:resource_tracker:UserWarning")
    try:
        resource_tracker.ensure_running()
    finally:
        sys.warnoptions[:] = saved


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _check_arguments(backend: str, address: str | None, workers: int | None, threads_per_worker: int,
                     max_runs: int | None) -> int:
    """One-line errors before anything is read; the worker count (default one per core)."""
    if backend == "ray":
        from .ray_backend import check_arguments

        check_arguments(workers)  # Ray missing, --workers 0
    elif backend != "local":
        raise ConfigError(f"--backend must be local or ray, got {backend!r}")
    elif address is not None:
        raise ConfigError("--address is the Ray cluster's: use it with --backend ray")
    if threads_per_worker < 1:
        raise ConfigError(f"--threads-per-worker must be >= 1, got {threads_per_worker}")
    if workers is None:
        workers = default_workers()
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {workers}")
    if max_runs is not None and max_runs < 0:
        raise ConfigError(f"max_runs must be >= 0, got {max_runs}")
    return workers


def _plan_record(session: str, names: Sequence[str], plan: Sequence[RunSpec], est: Any, *, seeds: tuple[int, int, int],
                 only: Any, encoder: str | None, sets: Sequence[str], quick: bool, workers: int,
                 threads_per_worker: int, embeddings: Any) -> dict[str, Any]:
    """The ``plan`` line of a session: what it set out to run, on what, with which estimate."""
    # IEIN's preset per dataset (a baseline's is <dataset>-<arch>, in its keys)
    presets = {n: n for n in names}
    presets.update({s.dataset: s.preset for s in plan if not s.is_baseline})
    return {
        "kind": "plan", "session": session, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "datasets": list(names), "presets": presets,
        "main_iterations": {n: main_iterations(n, presets[n]) for n in names},
        "seeds_main": seeds[0], "seeds_ablation": seeds[1], "seeds_baselines": seeds[2],
        "baselines": list(dict.fromkeys(s.arch for s in plan if s.is_baseline)),
        "only": only if only is None or isinstance(only, str) else ",".join(only),
        "encoder": encoder, "overrides": list(sets), "quick": quick,
        "keys": [s.key for s in plan], "workers": workers, "threads_per_worker": threads_per_worker,
        "embeddings": str(embeddings) if embeddings else None, "machine": machine_info(),
        "estimate": {"todo": est.todo, "done": est.done, "minutes": round(est.minutes, 1),
                     "measured": est.measured, "from_table": est.from_table},
    }


def _record_datasets(path: Path, records: Sequence[dict[str, Any]], names: Sequence[str],
                     data_root: Any, quick: bool) -> None:
    """The dataset lines, written once: the data must not change under a reproduction."""
    have = {(r["dataset"], bool(r.get("quick"))): r for r in records if r["kind"] == "dataset"}
    for name in names:
        rec = dataset_record(name, load_dataset(name, data_root, quick), data_root, quick)
        old = have.get((name, quick))
        if old is None:
            append_record(path, rec)
        elif old["data_checksums"] != rec["data_checksums"]:
            raise DataError(f"{path}: the {name} data differ from those of the runs already there "
                            "(split fingerprints changed); use a new --out directory")


class _Recorder:
    """Appends each finished run to ``runs.jsonl`` (the driver alone writes it) and keeps the
    progress bar and the lists of finished and failed runs."""

    def __init__(self, path: Path, session: str, t_start: float, total: int, progress: bool | None,
                 log: Log) -> None:
        from tqdm.auto import tqdm

        self.path, self.session, self.t_start, self.log = path, session, t_start, log
        self.finished: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.bar = tqdm(total=total, unit="run", desc="reproduce", file=sys.stderr, smoothing=0.1,
                        disable=(not sys.stderr.isatty()) if progress is None else not progress)

    def done(self, spec: RunSpec, rec: dict[str, Any]) -> None:
        rec["session"] = self.session
        rec["session_elapsed"] = round(time.perf_counter() - self.t_start, 3)
        rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        append_record(self.path, rec)
        self.finished.append(spec.key)
        self.bar.update(1)
        score = rec["test"]["final"]["weighted_f1"]
        self.bar.set_postfix_str(f"{spec.key} test w-F1 {score:.2f}")
        msg = f"done {spec.key}: test w-F1 {score:.2f}, {plural(rec['epochs_run'], 'epoch')}, {rec['wall_seconds']:.0f}s"
        self.bar.write(msg, file=sys.stderr) if not self.bar.disable else self.log(msg)

    def fail(self, spec: RunSpec, err: str) -> None:
        self.failed.append((spec.key, err))
        self.bar.update(1)
        self.log(f"FAILED {spec.key}:\n{err}")


def _execute(pending: Sequence[RunSpec], options: dict[str, Any], backend: str, workers: int, address: str | None,
             max_in_flight: int | None, recorder: _Recorder, log: Log) -> None:
    """Run ``pending`` on Ray, in this process (``workers == 0``) or in a pool of spawned
    workers; one failed run never loses the others."""
    if backend == "ray":
        from .ray_backend import run_on_ray

        run_on_ray(pending, options, address, recorder.done, recorder.fail, log, max_in_flight)
    elif workers == 0:
        init_worker(options, in_process=True)
        for spec in pending:
            try:
                rec = run_one(spec.to_dict())
            except Exception:  # noqa: BLE001
                recorder.fail(spec, traceback.format_exc())
            else:
                recorder.done(spec, rec)
    elif pending:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # no fork after torch threads exist
        _start_resource_tracker_quietly()
        with ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=ctx,
                                 initializer=init_worker, initargs=(options,)) as pool:
            futures = {pool.submit(run_one, s.to_dict()): s for s in pending}
            try:
                for fut in as_completed(futures):
                    spec = futures[fut]
                    try:
                        rec = fut.result()
                    except Exception:  # noqa: BLE001
                        recorder.fail(spec, traceback.format_exc())
                    else:
                        recorder.done(spec, rec)
            except BaseException:
                # interrupted: stop the workers now rather than wait for their runs
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.terminate()
                pool.shutdown(wait=False, cancel_futures=True)
                raise


def reproduce(
    out_dir: str | os.PathLike[str],
    datasets: str | Sequence[str] = "all",
    seeds_main: int | None = None,
    seeds_ablation: int | None = None,
    quick: bool = False,
    workers: int | None = None,
    threads_per_worker: int = 1,
    data_root: str | os.PathLike[str] | None = None,
    embeddings: str | os.PathLike[str] | None = None,
    max_runs: int | None = None,
    plan: Sequence[RunSpec] | None = None,
    progress: bool | None = None,
    log: Log = _stderr,
    seeds_baselines: int | None = None,
    baselines: Sequence[str] = BASELINES,
    only: str | Sequence[str] | None = None,
    encoder: str | None = None,
    overrides: dict[str, Any] | Sequence[str] | None = None,
    estimate_only: bool = False,
    backend: str = "local",
    address: str | None = None,
) -> dict[str, Any]:
    """Run every planned training not yet in ``out_dir/runs.jsonl``.

    ``workers``: processes in the pool (default one per core); 0 runs in this process (for
    debugging).  ``max_runs``: stop after this many new runs (to test resuming, or to work in
    slices).  ``plan`` replaces the default plan (tests); otherwise
    :func:`~.plan.build_plan` makes it from the seed counts, ``baselines``, ``only``
    (roles and/or models), ``encoder`` and ``overrides`` (``--set``, every run).  Before
    starting it logs how long the runs to do will take (:func:`~.plan.estimate`);
    ``estimate_only`` only computes that estimate (returned, not logged; nothing is
    written, no lock taken).  Returns a summary with the keys run now, skipped (already
    done) and failed, and the estimate.

    Workers are *spawned* (no fork of a process that may hold torch threads), so a script
    calling this with ``workers > 0`` needs the usual ``if __name__ == "__main__":`` guard.
    Ctrl-C or SIGTERM stops the workers at once; finished runs stay in ``runs.jsonl``.  A
    SIGKILL of this process ends the workers too (:func:`die_with_parent`).  One driver per
    folder: while one runs, another ``reproduce`` on the same ``out_dir`` raises ConfigError.

    ``backend="ray"`` runs each training as a task on the Ray cluster at ``address`` (None:
    a local one) instead of the pool (:mod:`.ray_backend`); ``workers`` then caps the runs
    in flight (None: as many as the cluster fits).  Only this driver writes ``runs.jsonl``.
    """
    max_in_flight = workers  # before the default: with Ray, None lets the cluster decide
    workers = _check_arguments(backend, address, workers, threads_per_worker, max_runs)
    seeds = _seed_counts(quick, seeds_main, seeds_ablation, seeds_baselines)
    sets = canonical_overrides(overrides)
    plan, names = _the_plan(plan, datasets, seeds, quick, baselines, only, encoder, sets)

    out = Path(out_dir)
    if estimate_only:
        return _estimate_only(out, plan, workers, max_runs, log)
    out.mkdir(parents=True, exist_ok=True)
    with driver_lock(out, log):  # before anything reads or repairs runs.jsonl
        path = runs_path(out)
        records = read_records(path, repair=True, log=log)
        est = estimate(plan, records, workers, max_runs)
        session = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        t_start = time.perf_counter()

        _record_datasets(path, records, names, data_root, quick)

        append_record(path, _plan_record(session, names, plan, est, seeds=seeds,
                                         only=only, encoder=encoder, sets=sets, quick=quick, workers=workers,
                                         threads_per_worker=threads_per_worker, embeddings=embeddings))

        pending, skipped = _pending(path, plan, records, max_runs)
        _announce(log, len(plan), skipped, len(pending), path, est, workers, backend, max_in_flight,
                  threads_per_worker)

        options = _worker_options(out, threads_per_worker, quick, data_root, embeddings)
        recorder = _Recorder(path, session, t_start, len(pending), progress, log)
        with _sigterm_as_interrupt(), contextlib.closing(recorder.bar):
            _execute(pending, options, backend, workers, address, max_in_flight, recorder, log)
        wall = time.perf_counter() - t_start
        summary = _end_session(path, session, wall, recorder, len(plan), skipped, log)
        return {**summary, "runs_file": str(path), "estimate": est}


def _announce(log: Log, planned: int, skipped: int, pending: int, path: Path, est: Any, workers: int, backend: str,
              max_in_flight: int | None, threads_per_worker: int) -> None:
    """The session's opening log lines: what runs now, how, and how long it should take."""
    how = plural(workers, "worker process", "worker processes") if workers else "in this process"
    if backend == "ray":
        how = "as Ray tasks" + (f", at most {max_in_flight} at once" if max_in_flight else "")
    log(f"reproduce: {plural(planned, 'run')} planned, {skipped} already in {path}, {pending} to run now "
        f"({how}, {plural(threads_per_worker, 'torch thread')} each)")
    log(est.line())


def _seed_counts(quick: bool, main: int | None, ablation: int | None, baselines: int | None) -> tuple[int, int, int]:
    """Seeds of the main table, the ablations and the baselines: given, else the quick or full defaults."""
    quick_seeds = QUICK_SEEDS if quick else None
    return (main or quick_seeds or DEFAULT_SEEDS_MAIN, ablation or quick_seeds or DEFAULT_SEEDS_ABLATION,
            baselines or quick_seeds or DEFAULT_SEEDS_BASELINES)


def _worker_options(out: Path, threads_per_worker: int, quick: bool, data_root: Any, embeddings: Any) -> dict[str, Any]:
    """What every worker (pool process or Ray task) is set up with: plain values, absolute paths."""
    return {"threads_per_worker": threads_per_worker, "quick": quick, "parent_pid": os.getpid(),
            "stage1_dir": str((out / "stage1").resolve()),
            "data_root": str(data_root) if data_root is not None else None,
            "embeddings": str(embeddings) if embeddings is not None else None}


def _the_plan(plan: Sequence[RunSpec] | None, datasets: str | Sequence[str], seeds: tuple[int, int, int],
              quick: bool, baselines: Sequence[str], only: str | Sequence[str] | None, encoder: str | None,
              sets: Any) -> tuple[Sequence[RunSpec], list[str]]:
    """The plan to run (``plan`` when given, else :func:`~.plan.build_plan`'s) and its datasets."""
    if plan is None:
        names = expand_datasets(datasets)
        plan = build_plan(names, seeds[0], seeds[1], quick=quick, baselines=baselines, seeds_baselines=seeds[2],
                          only=only, encoder=encoder, overrides=sets)
    else:
        names = list(dict.fromkeys(s.dataset for s in plan))
    if any(s.quick != quick for s in plan):
        raise ConfigError("the plan's quick flag differs from quick=")
    return plan, names


def _estimate_only(out: Path, plan: Sequence[RunSpec], workers: int, max_runs: int | None, log: Log) -> dict[str, Any]:
    """``estimate_only``: read-only (no folder made, no lock, no repair), with the same refusal
    of changed settings that a real start would give."""
    records = read_records(runs_path(out), log=log) if out.is_dir() else []
    _check_done_runs(runs_path(out), plan, records)
    est = estimate(plan, records, workers, max_runs)
    return {"planned": len(plan), "skipped": est.done, "run": [], "failed": [], "remaining": est.todo,
            "wall_seconds": 0.0, "runs_file": str(runs_path(out)), "estimate": est}


def _pending(path: Path, plan: Sequence[RunSpec], records: Sequence[dict[str, Any]],
             max_runs: int | None) -> tuple[list[RunSpec], int]:
    """The planned runs not yet in ``records`` (at most ``max_runs``), and how many are."""
    done = _check_done_runs(path, plan, records)
    pending = [s for s in plan if s.key not in done]
    skipped = len(plan) - len(pending)
    return (pending[:max_runs] if max_runs is not None else pending), skipped


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """`kill PID` stops a reproduction like Ctrl-C does (finished runs stay in runs.jsonl);
    signal handlers can be set from the main thread only."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _end_session(path: Path, session: str, wall: float, recorder: _Recorder, planned: int, skipped: int,
                 log: Log) -> dict[str, Any]:
    """The ``session_end`` line, the closing log line, and the counts of the summary."""
    finished, failed = recorder.finished, recorder.failed
    append_record(path, {"kind": "session_end", "session": session, "wall_seconds": round(wall, 3),
                         "runs_done": len(finished), "runs_failed": len(failed)})
    remaining = planned - skipped - len(finished)
    log(f"reproduce: {plural(len(finished), 'run')} done in {wall / 60:.1f} min, {len(failed)} failed, "
        f"{remaining} of {planned} still to run")
    return {"planned": planned, "skipped": skipped, "run": finished, "failed": failed,
            "remaining": remaining, "wall_seconds": wall}


__all__ = ["default_workers", "driver_lock", "machine_info", "reproduce", "same_config"]
