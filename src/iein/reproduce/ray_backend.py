"""``iein reproduce --backend ray``: the reproduction's trainings as Ray tasks, one run a task.

The local backend (:func:`.runner.reproduce` with a process pool) stays the default; this
module only replaces the pool.  Everything else is the same code: each task calls
:func:`.worker.run_one` on one :class:`~.plan.RunSpec`, exactly as a pool worker does, and
returns the ``run`` record to the driver, which alone appends it to ``runs.jsonl`` (the
driver's ``record_done``).  So resuming, the one-driver-per-folder lock and ``iein report``
work unchanged, whichever backend wrote the runs.

Faults: a task whose worker process dies (killed, OOM, a node lost) is run again by Ray, up
to :data:`MAX_RETRIES` times; a run that *raises* is not retried (training is seeded, it
would fail again) and is reported as failed, like with the pool.  A result is recorded only
once per key even if Ray were to deliver one twice: the driver checks before appending.

Resources: a task asks for ``threads_per_worker`` CPUs (its torch thread count) and one GPU
when its run trains on CUDA (``--set train.device=cuda``; Ray shows the task only the GPU it
was given, so ``cuda:N`` with N > 0 would not exist there).  Ray keeps a worker process
alive between tasks, so the dataset a worker prepared for one run is reused by its next
(:func:`.worker.run_one`).

Every node needs ``iein`` (the same version as the driver), its dependencies, and the data
(``--data-root``, or the usual lookup) at the same path; runs are written by the driver only.
"""
from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ..errors import ConfigError
from ..utils import plural

if TYPE_CHECKING:
    from .plan import RunSpec

Log = Callable[[str], None]

#: Times Ray re-runs a task whose worker died (a run that raises is not retried).
MAX_RETRIES = 3
RAY_MISSING = "--backend ray needs Ray: pip install 'iein[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or a one-line ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def check_arguments(workers: int | None) -> None:
    """Refuse, in one line and before any work, what cannot run on Ray."""
    import_ray()
    if workers == 0:
        raise ConfigError("--workers 0 trains in this process: leave it out with --backend ray")


#: Seconds to wait for a cluster's head to answer (Ray itself retries for many minutes).
CONNECT_TIMEOUT_S = 10.0


def _check_reachable(address: str) -> None:
    """Fail in seconds, in one line, when nothing listens at a ``HOST:PORT`` address;
    ``ray.init`` would keep retrying for many minutes.  Other forms (``auto``,
    ``ray://...``) are left to Ray."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); start "
                          "one with `ray start --head` and give its HOST:6379") from None


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[Any]:
    """Connect to the Ray cluster at ``address`` for the duration of the block.

    ``None`` starts a local one-machine cluster (or joins the one ``RAY_ADDRESS`` names).  A
    connection that already exists in this process (a script or test called ``ray.init``)
    is used as it is and left open; one made here is closed at the end."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address is not None:
        _check_reachable(address)
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
    if address is None:
        kwargs["include_dashboard"] = False  # a local cluster for this command only
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"--address {address}: cannot connect to a Ray cluster "
                          f"({first[0] if first else type(exc).__name__})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _run_task(spec_dict: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The body of one Ray task: set up this worker process once (thread count, an empty
    data cache), then train the run with the very function the local pool uses."""
    from . import worker

    if worker.worker_options() != options:  # a fresh worker, or another reproduction's
        worker.init_worker(options)
    return worker.run_one(spec_dict)


def _resources(spec: "RunSpec", threads: int) -> dict[str, Any]:
    """Ray resources of one run: its torch threads as CPUs, and a GPU when it trains on CUDA."""
    device = str(spec.experiment(threads).train.device)
    return {"num_cpus": threads, "num_gpus": 1 if device.startswith("cuda") else 0}


def _absolute_paths(options: dict[str, Any], datasets: Sequence[str]) -> dict[str, Any]:
    """The worker options with the data and embedding paths made absolute, as this driver
    resolves them.  A Ray worker's working folder and environment are not the driver's
    (``../shared/data`` and ``$IEIN_DATA_DIR`` would mean something else there, or nothing),
    so the driver's lookup of each dataset's folder is what the workers get."""
    from pathlib import Path

    from ..data.registry import default_data_dir

    out = dict(options)
    for key in ("data_root", "embeddings"):
        if out.get(key) is not None:
            out[key] = str(Path(out[key]).expanduser().absolute())
    if out.get("data_root") is None:
        roots = {default_data_dir(name).absolute().parent for name in datasets}
        if len(roots) == 1:
            out["data_root"] = str(roots.pop())
    return out


def run_on_ray(
    pending: Sequence["RunSpec"],
    options: dict[str, Any],
    address: str | None,
    record_done: Callable[["RunSpec", dict[str, Any]], None],
    record_failed: Callable[["RunSpec", str], None],
    log: Log,
    max_in_flight: int | None = None,
) -> None:
    """Train ``pending`` on the Ray cluster at ``address``, recording each result as it
    arrives (in completion order, like the pool).

    ``options`` are the pool's worker options (:func:`.worker.init_worker`); the driver's
    PID is dropped from them, since a Ray worker's parent is Ray's own process, not this
    driver (Ray ends a job's tasks when its driver exits).  ``max_in_flight`` caps the runs
    submitted at once (``--workers N``); None submits them all and lets Ray schedule them
    by the CPUs (and GPUs) its nodes have.  Ctrl-C or SIGTERM cancels every unfinished task.
    """
    if not pending:
        return
    threads = int(options.get("threads_per_worker", 1))
    options = _absolute_paths(dict(options, parent_pid=None), sorted({s.dataset for s in pending}))
    with connected(address) as ray:
        cpus = ray.cluster_resources().get("CPU", 0)
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        needs_gpu = [s.key for s in pending if _resources(s, threads)["num_gpus"]]
        if needs_gpu and not ray.cluster_resources().get("GPU", 0):  # Ray would wait for one forever
            raise ConfigError(f"run {needs_gpu[0]} trains on CUDA, but the Ray cluster has no GPU")
        log(f"ray: {plural(nodes, 'node')}, {cpus:g} CPUs: up to {int(cpus // threads)} runs at once "
            f"({plural(threads, 'CPU')} each)")
        task = ray.remote(_run_task)
        queue = list(pending)
        in_flight: dict[Any, RunSpec] = {}
        recorded: set[str] = set()

        def submit() -> None:
            while queue and (max_in_flight is None or len(in_flight) < max_in_flight):
                spec = queue.pop(0)
                ref = task.options(name=f"iein-run {spec.key}", max_retries=MAX_RETRIES, retry_exceptions=False,
                                   **_resources(spec, threads)).remote(spec.to_dict(), options)
                in_flight[ref] = spec

        try:
            submit()
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    spec = in_flight.pop(ref)
                    try:
                        rec = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a failed run must not lose the others
                        # RayTaskError carries the worker's traceback; WorkerCrashedError says
                        # the retries are spent
                        record_failed(spec, str(exc))
                        continue
                    if spec.key in recorded:
                        log(f"warning: ignoring a second result for {spec.key} (already recorded)")
                        continue
                    recorded.add(spec.key)
                    record_done(spec, rec)
                submit()
        except BaseException:
            for ref in in_flight:  # interrupted: stop the cluster's work for this driver now
                ray.cancel(ref, force=True)
            raise


__all__ = ["MAX_RETRIES", "RAY_MISSING", "check_arguments", "connected", "import_ray", "run_on_ray"]
