"""Data-parallel training on ``torch.distributed`` (one process per core, GPU or node).

``torchrun --nproc-per-node 2 -m iein train ...`` starts two copies of the usual command;
torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...) tells
each copy who it is, and :func:`init` joins them into one process group (gloo on CPU, NCCL
on GPU, where process ``LOCAL_RANK`` uses ``cuda:LOCAL_RANK``).  Without those variables
everything here is the identity and training is the single process it always was.

What stays the same at any number of processes:

* the *global* batch is the preset's ``batch_size`` dialogues: every process draws the same
  seeded permutation and takes its part of each global batch (:func:`rank_batches`);
* the gradient is the gradient of the global batch's loss.  The losses are means over
  labelled utterances, and the mean of per-process means is not the global mean when the
  processes hold different numbers of utterances, so each process weights its loss by its
  share of the global batch's labelled utterances (:func:`loss_share`) before DDP averages;
* dev evaluation, logging and every file are rank 0's; the others receive its per-epoch
  history row and apply the same early-stopping rule to it, so they stop together.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from ..data.batching import IGNORE, Batch, Collate, EncodedConversation, collate, iter_batches
from ..errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """Who this process is: ``rank`` of ``world`` processes, computing on ``device``."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world() -> int:
    """Processes in the job as torchrun describes it (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """This process's rank as torchrun describes it (0 outside torchrun); usable before
    :func:`init`, e.g. to keep the CLI's output to rank 0."""
    return int(os.environ.get("RANK", "0"))


def init(device: str) -> Context:
    """Join torchrun's process group (once per process) and place this process on its device.

    The backend follows the device: NCCL for CUDA, gloo for CPU.  On CUDA, process
    ``LOCAL_RANK`` of each node computes on ``cuda:LOCAL_RANK`` (the index of ``device``, if
    any, is ignored: each process needs its own GPU)."""
    dev = torch.device(device)
    if env_world() <= 1 and not dist.is_initialized():
        return Context(0, 1, dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        atexit.register(teardown)
    return Context(dist.get_rank(), dist.get_world_size(), dev)


def teardown() -> None:
    """Leave the process group (registered with ``atexit`` by :func:`init`)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (the model itself in a single process).

    DDP copies rank 0's weights to every process here, and averages gradients during
    ``backward``.  It expects a gradient for every parameter at every step, which
    :func:`ddp_loss` guarantees (so no ``find_unused_parameters`` graph search per step)."""
    if ctx.world == 1:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def seed_rank(seed: int, ctx: Context) -> None:
    """Give each process its own torch random stream (dropout masks), derived from the seed
    and the rank, as nanoGPT does; rank 0 keeps the single-process stream.  Call after the
    model is built (initial weights are rank 0's anyway: DDP broadcasts them)."""
    if ctx.rank > 0:
        torch.manual_seed(int(np.random.SeedSequence([seed, ctx.rank]).generate_state(1)[0]))


def check_batch_size(batch_size: int, ctx: Context) -> None:
    if batch_size < ctx.world:
        raise ConfigError(f"batch_size {batch_size} is smaller than the {ctx.world} processes: the global "
                          "batch is split between them (use fewer processes or a larger batch)")


def rank_batches(data: Sequence[EncodedConversation], order: Sequence[int], batch_size: int,
                 collate_utterances: Collate, ctx: Context) -> Iterator[Batch]:
    """This process's part of each global batch of ``batch_size`` dialogues taken from ``order``.

    Process ``r`` takes the ``r``-th of ``world`` contiguous, near-equal parts
    (``np.array_split``: sizes differ by at most one when ``world`` does not divide the
    batch).  Every process must make the same number of steps, so a process whose part is
    empty (a last batch with fewer dialogues than processes) gets a stand-in: the batch's
    first dialogue with its labels removed, which adds nothing to the gradient."""
    if ctx.world == 1:
        yield from iter_batches(data, batch_size, collate_utterances, order=order)
        return
    for start in range(0, len(order), batch_size):
        chunk = [int(i) for i in order[start: start + batch_size]]
        part = np.array_split(np.asarray(chunk), ctx.world)[ctx.rank].tolist()
        if part:
            yield collate([data[i] for i in part], collate_utterances, part)
        else:
            standin = data[chunk[0]]
            standin = replace(standin, label_ids=np.full_like(standin.label_ids, IGNORE))
            yield collate([standin], collate_utterances, [chunk[0]])


def loss_share(batch: Batch, class_weight: torch.Tensor | None, ctx: Context) -> float | None:
    """``n_r / N``: this process's share of the labelled utterances of the global batch
    (weighted by ``class_weight`` where given, as the weighted cross-entropy's mean is), or
    ``None`` when the global batch has no labelled utterance at all (then every process
    skips the step, as a single process skips a batch without labels).

    Scaling process r's mean loss by ``world * n_r / N`` before DDP divides the summed
    gradients by ``world`` gives exactly the gradient of the global mean.  Exact for the
    cross-entropy models and for IEIN's loss (eq. 11-13: every term is a mean over
    labelled utterances); approximate where a loss averages over something else: a CRF's
    mean over dialogues, IEIN's eq.-12 margin under class weighting (the margin term is
    unweighted, the cross-entropy weighted)."""
    labelled = batch.labels != IGNORE
    if ctx.world == 1:
        return 1.0 if bool(labelled.any()) else None
    if class_weight is not None:
        mass = class_weight.to(batch.labels.device, torch.float64)[batch.labels[labelled]].sum()
    else:
        mass = labelled.sum().to(torch.float64)
    total = mass.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(mass) / float(total) if float(total) > 0 else None


def ddp_loss(loss: torch.Tensor | None, share: float, params: Sequence[torch.Tensor], ctx: Context) -> torch.Tensor:
    """What this process back-propagates: its mean loss times ``world * share`` (DDP then
    averages to the global mean's gradient, :func:`loss_share`), plus zero times every
    parameter.  The zero term gives every parameter a gradient at every step, as DDP
    requires: a process without labelled utterances (``loss`` None: a stand-in, or an
    unlabelled part of the batch) and a model variant that leaves parameters unused (IEIN
    with ``iterations=0``) still take part in the gradient averaging."""
    if ctx.world == 1:
        assert loss is not None
        return loss
    anchor = sum(p.sum() for p in params) * 0.0
    return anchor if loss is None else loss * (share * ctx.world) + anchor  # type: ignore[return-value]


def all_sum(values: dict[str, float], ctx: Context) -> dict[str, float]:
    """Per-key sums over processes (the epoch's loss terms).  A key some process never saw
    (no labelled batch this epoch) counts as 0 there; keys keep rank 0's order."""
    if ctx.world == 1:
        return dict(values)
    keys: list[str] = []
    for names in all_gather(list(values), ctx):
        keys += [k for k in names if k not in keys]
    t = torch.tensor([float(values.get(k, 0.0)) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def broadcast(obj: T, ctx: Context) -> T:
    """Rank 0's ``obj`` on every process (any picklable object)."""
    if ctx.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: T, ctx: Context) -> list[T]:
    """Every process's ``obj``, by rank."""
    if ctx.world == 1:
        return [obj]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def from_main(fn: Callable[[], T], ctx: Context) -> T:
    """``fn()`` run on rank 0 only (e.g. reading a file that may exist on its node only); its
    result, or the error it raised, on every process, so all fail together."""
    if ctx.world == 1:
        return fn()
    result: Any = None
    error: Exception | None = None
    if ctx.is_main:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
            error = exc
    result, error = broadcast((result, error), ctx)
    if error is not None:
        raise error
    return result


__all__ = ["Context", "init", "teardown", "wrap", "seed_rank", "check_batch_size", "rank_batches", "loss_share",
           "ddp_loss", "all_sum", "broadcast", "all_gather", "from_main", "env_rank", "env_world"]
