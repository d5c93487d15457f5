"""One trainer for every model on every encoder (flair's ``ModelTrainer(model, corpus)``);
:func:`train` reads top to bottom: build, restore, one epoch, end of epoch, finish.

Honest model selection: the best epoch is chosen on dev only (the one early-stopping rule
of :mod:`iein.training.early_stopping`); the test split is scored once, with the selected
weights, at the end.  The trainer knows the model contract only
(:class:`~iein.models.base.ConversationModel`): the model owns its loss and its optimiser
parameter groups.

Files of a run writing to ``out`` (e.g. ``runs/meld-seed0.safetensors``):

* ``out`` itself is written once, when the run ends, so re-running a command never replaces
  a finished model with a half-trained one;
* ``<out stem>.best.safetensors``: the best model so far, a normal checkpoint, rewritten
  atomically whenever dev improves (what is left if the run dies);
* ``<out stem>.resume.pt``: the state after the last finished epoch (weights, optimiser,
  every RNG, history, early-stopping state), written atomically every epoch, and with
  ``resume_every_s`` also inside one (a long transformer epoch); ``resume=True``
  continues from it and gives bit-identical results on CPU.  It holds tensors and plain
  values only and is read with ``torch.load(weights_only=True)``.

Both side files are removed when the run ends.

Under ``torchrun`` the same function trains data-parallel (:mod:`.distributed`): rank 0
evaluates, logs and writes every file; the checkpoint is the same as a single process's.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..checkpoint import load_checkpoint, read_metadata, save_checkpoint
from ..data.batching import EncodedConversation, encode_with
from ..data.conversation import Conversation, Corpus
from ..encoders.base import Featurizer
from ..encoders.registry import get_encoder_class
from ..errors import CheckpointError, ConfigError
from ..evaluation.evaluate import evaluate_model, selection_metric
from ..models.base import ConversationModel
from ..models.registry import build_model
from ..utils import plural, set_seed, torch_threads
from ..atomic import remove_stale_temporaries
from . import distributed
from .batch_plan import epoch_order, lr_schedule, n_steps, utterance_items
from .callbacks import Callback
from .config import SPEED_ONLY_FIELDS, TrainConfig
from .early_stopping import EarlyStopping, cut_by_cap
from .experiment import ExperimentConfig
from .resume_state import (RESUME_FORMAT, check_resume_state, load_resume_state, read_resume_state,  # noqa: F401
                           rng_state, save_resume_state, set_rng_state, side_files)

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fingerprint(convs: Sequence[Conversation]) -> str:
    """sha256 of a split's content (ids, speakers, texts, labels), independent of file format,
    so a checkpoint records exactly which data it was trained and scored on."""
    h = hashlib.sha256()
    for c in convs:
        h.update(json.dumps([c.id, [[u.speaker, u.text, u.label] for u in c.utterances]]).encode())
    return h.hexdigest()


@dataclass
class PreparedData:
    """Everything derived from a corpus and an encoder's featurizer once, reused across
    seeds and across models (and across encoders whose featurizers agree)."""

    corpus_name: str
    labels: tuple[str, ...]
    encoder: str
    featurizer: Featurizer
    encoder_derived: dict[str, Any]  # encoder config fields decided by the data (vocab size...)
    features_key: str  # which encoders can read these features (UtteranceEncoder.features_key)
    splits: dict[str, list[EncodedConversation]]
    coverage: dict[str, Any]
    provenance: dict[str, Any]
    data_checksums: dict[str, str]
    notes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def vocab(self) -> Any:
        return getattr(self.featurizer, "vocab", None)


def prepare(corpus: Corpus, vectors: str | Path | None = None, encoder: str = "glove-bigru",
            encoder_config: dict[str, Any] | None = None, log: Log = _stderr) -> PreparedData:
    """Build the encoder's featurizer from the *training split only* (vocabulary, vectors: no
    dev/test leakage) and featurize every split.  Data notes (repaired or dropped rows) are
    printed, so a training run says what the reader changed."""
    enc_cls = get_encoder_class(encoder)
    cfg = enc_cls.config_class.from_dict(dict(encoder_config or {}))
    for split, notes in corpus.notes.items():
        for note in notes:
            log(f"data note ({corpus.name}/{split}): {note}")
    featurizer, derived = enc_cls.build_featurizer(cfg, corpus["train"], log, vectors=vectors,
                                                   load_encoder=_stage1_encoder)
    index = {name: i for i, name in enumerate(corpus.labels)}
    splits = {}
    for name, convs in corpus.splits.items():
        feats = featurizer.featurize_many(convs, log=log)
        splits[name] = [encode_with(c, f, index) for c, f in zip(convs, feats)]
    featurizer.release()  # e.g. a frozen transformer's base model: not needed for training
    return PreparedData(
        corpus.name, tuple(corpus.labels), encoder, featurizer, derived, enc_cls.features_key(dict(encoder_config or {})),
        splits, dict(featurizer.coverage),
        dict(featurizer.provenance), {name: fingerprint(convs) for name, convs in corpus.splits.items()},
        {k: list(v) for k, v in corpus.notes.items()},
    )


def check_stage1_data(path: str | Path, corpus: Corpus) -> None:
    """A stage-1 file must have been trained on this corpus's training split: its encoder on
    another corpus (or on a split that holds this dev or test) would make stage 2's
    selection and test score meaningless.  One line, before any training."""
    meta = read_metadata(path)
    dataset, trained_on = meta.get("dataset"), (meta.get("data_checksums") or {}).get("train")
    if dataset != corpus.name:
        raise ConfigError(f"{path}: this stage-1 model was trained on {dataset!r}, this run's data is "
                          f"{corpus.name!r}; train stage 1 on the same data (or pass --force to retrain it)")
    if trained_on != fingerprint(corpus["train"]):
        raise ConfigError(f"{path}: this stage-1 model was trained on another {corpus.name!r} training split "
                          "(its checksum differs); train stage 1 on this run's data (or pass --force to retrain it)")


def _stage1_encoder(path: Path) -> Any:
    """The utterance encoder of a trained checkpoint (stage 1 of two-stage training)."""
    return load_checkpoint(path).model.utterance_encoder


def class_weights(data: Sequence[EncodedConversation], n_labels: int, mode: str) -> torch.Tensor | None:
    """'balanced' = n / (L * count_c) as in scikit-learn; 'sqrt' its square root (milder).
    Both are normalised to mean 1 so the loss scale (and lambda's meaning) is unchanged."""
    if mode == "none":
        return None
    gold = np.concatenate([c.label_ids for c in data])
    counts = np.bincount(gold[gold >= 0], minlength=n_labels).astype(np.float64)
    w = counts.sum() / (n_labels * np.maximum(counts, 1))
    if mode == "sqrt":
        w = np.sqrt(w)
    return torch.tensor(w / w.mean(), dtype=torch.float32)


@dataclass
class TrainResult:
    best_epoch: int
    epochs_run: int
    history: list[dict[str, Any]]
    dev: dict[str, Any]
    test: dict[str, Any] | None
    seconds_per_epoch: float
    checkpoint: str | None
    model: ConversationModel = field(repr=False)
    #: ``patience`` (the early-stopping rule ended it), ``cap`` (``max_epochs`` ended it while
    #: its best dev epoch was inside the last patience window: still improving) or
    #: ``max_epochs`` (it ran to the cap, but the rule would have stopped it there too)
    stopped_by: str = "patience"

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "model"}


def build_optimizer(model: ConversationModel, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over the model's own parameter groups (the paper's L2 everywhere except the word
    embeddings, which get ``embedding_weight_decay``; a pretrained transformer gets its own
    learning rate).  The fused kernel where the parameters' device has one: the same update in
    one pass (docs/results.md has the check and the time)."""
    groups = model.param_groups(cfg.weight_decay, cfg.embedding_weight_decay)
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = bool(devices) and devices <= {"cpu", "cuda"}  # elsewhere (e.g. mps): torch's default
    return torch.optim.Adam(groups, lr=cfg.lr, fused=fused or None)


def build_for(data: PreparedData, exp: ExperimentConfig, pretrained: bool = True) -> ConversationModel:
    """The experiment's model on the prepared data's encoder (labels and data-decided
    encoder fields filled in)."""
    if get_encoder_class(exp.encoder).features_key(exp.encoder_config) != data.features_key:
        raise ConfigError(f"encoder {exp.encoder!r} cannot read data prepared for {data.encoder!r}")
    model_cfg = dict(exp.model, n_labels=len(data.labels))
    enc_cfg = dict(exp.encoder_config, **data.encoder_derived)
    return build_model(exp.arch, model_cfg, exp.encoder, enc_cfg, featurizer=data.featurizer, pretrained=pretrained)


def run_identity(data: PreparedData, exp: ExperimentConfig) -> str:
    """What a resume state must match: the experiment (minus speed-only settings), the data
    and the code version."""
    ident = exp.to_dict()
    for key in SPEED_ONLY_FIELDS:
        ident["train"].pop(key, None)
    blob = json.dumps({"exp": ident, "data": data.data_checksums, "labels": list(data.labels),
                       "features": data.featurizer.key(), "version": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def train(
    data: PreparedData,
    exp: ExperimentConfig,
    out: str | Path | None = None,
    progress: bool | None = None,
    log: Log = _stderr,
    evaluate_test: bool = True,
    resume: bool = False,
    extra_meta: dict[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train ``exp`` on ``data['train']``, select on ``data['dev']``, score ``data['test']``.

    With ``out``, the best model so far and a per-epoch resume state are kept beside it
    (:mod:`.resume_state`), and ``out`` is written when the run ends.  ``resume`` continues
    from the resume state (refused if it belongs to another configuration or data).
    ``callbacks`` (:mod:`.callbacks`) are called after every step and every epoch."""
    cfg = exp.train
    if not data.splits.get("dev"):
        raise ConfigError("no dev conversations: model selection needs a dev split")
    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {cfg.device!r}: CUDA is not available on this machine")
    ctx = distributed.init(cfg.device)  # single process unless started by torchrun
    distributed.check_batch_size(cfg.batch_size, ctx)
    if progress is None:
        progress = sys.stderr.isatty()
    if not ctx.is_main:  # rank 0 logs and writes every file
        log, progress = (lambda _: None), False
    with torch_threads(cfg.threads):
        run = _Run(data, exp, out, ctx, log, progress, list(callbacks), extra_meta)
        if resume:
            run.restore()
        stopped = bool(run.history) and run.stopper.should_stop(len(run.history))
        for epoch in range(len(run.history) + 1, cfg.max_epochs + 1):
            if stopped:
                break
            stopped = run.end_of_epoch(epoch, *run.one_epoch(epoch))
        return run.finish(stopped, evaluate_test)


class _Run:
    """One training run's state, in the order a run uses it: built (model, optimiser,
    schedule, batches), restored from a resume state, one epoch at a time, finished."""

    def __init__(self, data: PreparedData, exp: ExperimentConfig, out: str | Path | None, ctx: distributed.Context,
                 log: Log, progress: bool, callbacks: list[Callback], extra_meta: dict[str, Any] | None) -> None:
        cfg = self.cfg = exp.train
        self.data, self.exp, self.out, self.ctx, self.log, self.progress = data, exp, out, ctx, log, progress
        self.callbacks = callbacks
        self.best_path, self.resume_path = side_files(out) if out is not None and ctx.is_main else (None, None)
        for side in (self.best_path, self.resume_path):
            if side is not None:  # temporaries of a write that a kill interrupted
                remove_stale_temporaries(side.parent, side.name)
        self.identity = run_identity(data, exp)
        self.exclude = (cfg.exclude_label,) if cfg.exclude_label else ()
        set_seed(cfg.seed)
        self.model = build_for(data, exp).to(ctx.device)
        distributed.seed_rank(cfg.seed, ctx)
        self.optim = build_optimizer(self.model, cfg)
        if cfg.class_weighting != "none" and not self.model.supports_class_weight:
            raise ConfigError(f"class_weighting {cfg.class_weighting!r}: model {exp.arch} has no per-utterance "
                              "loss to weight (use class_weighting=none)")
        weight = class_weights(data.splits["train"], len(data.labels), cfg.class_weighting)
        self.weight = weight.to(ctx.device) if weight is not None else None
        self.rng = np.random.default_rng(cfg.seed)
        self.train_set = data.splits["train"]
        if cfg.batch_unit == "utterances":
            if self.model.reads_context:
                raise ConfigError(f"batch_unit 'utterances': model {exp.arch} reads the dialogue around each "
                                  "utterance, so it trains on whole dialogues (batch_unit=dialogues)")
            self.train_set = utterance_items(self.train_set)
        self.n_batches = n_steps(len(self.train_set), cfg.batch_size)
        self.sched = lr_schedule(self.optim, cfg, self.n_batches)
        self.stopper = EarlyStopping(cfg.patience, cfg.min_epochs)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, Any]] = []
        #: where a restored resume state stopped inside an epoch (see ``resume_every_s``)
        self.partial: dict[str, Any] | None = None
        if cfg.resume_every_s > 0 and ctx.world > 1:
            raise ConfigError("train config field 'resume_every_s': resume states inside an epoch are written by "
                              "a single process only (use 0 with torchrun)")
        self.net = distributed.wrap(self.model, ctx)  # what trains; ``model`` is evaluated and saved
        self.meta = _checkpoint_meta(data, exp, extra_meta)

    def restore(self) -> None:
        """Continue from the resume state beside ``out`` (read on rank 0: its node may be the
        only one that has it)."""
        out = self.out

        def read_state() -> dict[str, Any]:
            if out is None or not side_files(out)[1].is_file():
                raise ConfigError(f"--resume: no resume state {side_files(out)[1] if out else ''} "
                                  "(nothing to continue)")
            return load_resume_state(side_files(out)[1], self.identity)

        st = distributed.from_main(read_state, self.ctx)
        assert out is not None
        if st.get("unverified"):
            self.log(f"note: {side_files(out)[1]} was written before resume states were checksummed: not verified")
        self.model.load_state_dict(st["model"])
        self.optim.load_state_dict(st["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(st["scheduler"])
        self.best_state = st["best_model"]
        self.history = json.loads(st["history"])
        self.stopper.best_score, self.stopper.best_epoch = float(st["best_score"]), int(st["best_epoch"])
        set_rng_state(st["rng"], self.rng, self.cfg.seed, self.ctx)
        self.partial = _read_partial(st.get("partial"), len(self.history) + 1, self.n_batches, side_files(out)[1])
        where = (f"in epoch {self.partial['epoch']} after step {self.partial['steps']} of {self.n_batches}"
                 if self.partial else f"after epoch {len(self.history)}")
        self.log(f"resuming {where} (best epoch {self.stopper.best_epoch}) from {side_files(out)[1]}")

    def one_epoch(self, epoch: int) -> tuple[dict[str, float], float]:
        """Train one epoch: the loss sums over every process, and the seconds it took."""
        t0 = time.perf_counter()
        self.model.train()
        start_order = json.dumps(self.rng.bit_generator.state)  # a state inside this epoch redraws its order
        order = epoch_order(self.train_set, self.cfg, self.rng)  # the same on every process
        done, sums, before = 0, {"loss": 0.0}, 0.0
        if self.partial is not None:  # restored inside this epoch: skip the steps it had done
            done, sums, before = self.partial["steps"], self.partial["sums"], self.partial["seconds"]
            self.partial = None
        batches = distributed.rank_batches(self.train_set, order[done * self.cfg.batch_size:], self.cfg.batch_size,
                                           self.model.utterance_encoder.collate, self.ctx)
        bar = tqdm(batches, total=self.n_batches, initial=done, desc=f"epoch {epoch}", leave=False,
                   disable=not self.progress)
        callbacks = self.callbacks
        if self.resume_path is not None and self.cfg.resume_every_s > 0:
            saves = _MidEpochSaves(self, start_order, sums, before)
            callbacks = [saves, *callbacks]  # written before any other callback sees the step
        sums = _train_epoch(self.net, bar, self.optim, self.sched, self.weight, self.ctx, self.cfg.clip_norm, epoch,
                            callbacks, note=None if self.progress else self.log, first_step=done + 1, sums=sums)
        seconds = before + time.perf_counter() - t0
        return distributed.all_sum(sums, self.ctx), seconds  # each process added its share of the global means

    def save_inside_epoch(self, epoch: int, steps: int, start_order: str, sums: dict[str, float],
                          seconds: float) -> None:
        """The resume state after step ``steps`` of ``epoch`` (one process: see ``resume_every_s``),
        its data-order RNG rewound to the epoch's start."""
        assert self.resume_path is not None
        rng = dict(rng_state(self.rng, self.ctx.device), numpy=start_order)
        save_resume_state(self.resume_path, self.identity, self.model, self.optim, self.sched, self.best_state,
                          self.history, self.stopper, [rng],
                          partial={"epoch": epoch, "steps": steps, "sums": dict(sums), "seconds": seconds})

    def end_of_epoch(self, epoch: int, sums: dict[str, float], seconds: float) -> bool:
        """Score dev (rank 0 decides for every process), keep the best model, log, write the
        resume state, call the callbacks; whether early stopping ends the run here."""
        dev, row = None, None
        if self.ctx.is_main:
            dev = evaluate_model(self.model, self.data.splits["dev"], self.data.labels, self.exclude,
                                 self.cfg.eval_batch_size)
            _, score = selection_metric(dev)
            row = {k: v / self.n_batches for k, v in sums.items()}
            row.update(epoch=epoch, dev_step_wf1=[s["weighted_f1"] for s in dev["steps"]], dev_score=score,
                       seconds=round(seconds, 2))
        row = distributed.broadcast(row, self.ctx)
        assert row is not None
        self.history.append(row)
        improved = self.stopper.update(epoch, row["dev_score"])
        if improved:
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            if self.best_path is not None:
                save_checkpoint(self.best_path, self.model, self.data.labels, **self.meta, best_epoch=epoch, dev=dev)
        terms = ", ".join(f"{k} {row[k]:.4f}" for k in sums if k != "loss")
        metric_name = "micro-F1 excl." if self.exclude else "w-F1"
        self.log(f"epoch {epoch:3d} | loss {row['loss']:.4f}{f' ({terms})' if terms else ''} | dev {metric_name} "
                 f"{row['dev_score']:.2f} | dev w-F1 per step {'/'.join(f'{x:.2f}' for x in row['dev_step_wf1'])} | "
                 f"{seconds:.1f}s{' *' if improved else ''}")
        stopped = self.stopper.should_stop(epoch)
        if self.out is not None:
            rng_states = distributed.all_gather(rng_state(self.rng, self.ctx.device), self.ctx)  # every dropout stream
            if self.resume_path is not None:
                save_resume_state(self.resume_path, self.identity, self.model, self.optim, self.sched,
                                  self.best_state, self.history, self.stopper, rng_states)
        if stopped:
            self.log(f"early stop: no dev improvement for {plural(self.cfg.patience, 'epoch')} "
                     f"(best epoch {self.stopper.best_epoch})")
        for cb in self.callbacks:
            cb.on_epoch_end(epoch)
        return stopped

    def finish(self, stopped: bool, evaluate_test: bool) -> TrainResult:
        """The best epoch's weights, scored on dev (and test, once), written to ``out``; the
        side files removed."""
        cfg, model, data = self.cfg, self.model, self.data
        if self.best_state is None:
            raise ConfigError("no epoch was trained (max_epochs reached before the first epoch)")
        model.load_state_dict(self.best_state)
        model.eval()
        dev, test = None, None
        if self.ctx.is_main:
            dev = evaluate_model(model, data.splits["dev"], data.labels, self.exclude, cfg.eval_batch_size)
            if evaluate_test and data.splits.get("test"):
                test = evaluate_model(model, data.splits["test"], data.labels, self.exclude, cfg.eval_batch_size)
            if self.out is not None:
                save_checkpoint(self.out, model, data.labels, **self.meta, best_epoch=self.stopper.best_epoch,
                                dev=dev, test=test)
                for side in (self.best_path, self.resume_path):
                    with contextlib.suppress(FileNotFoundError):
                        side.unlink()  # type: ignore[union-attr]
                    remove_stale_temporaries(side.parent, side.name)  # type: ignore[union-attr]
        dev, test = distributed.broadcast((dev, test), self.ctx)
        seconds = [h["seconds"] for h in self.history]
        best = self.stopper.best_epoch
        stopped_by = ("patience" if stopped else
                      "cap" if cut_by_cap(len(self.history), best, cfg.max_epochs, cfg.patience) else "max_epochs")
        if stopped_by == "cap":
            self.log(f"warning: stopped by the epoch cap (max_epochs {cfg.max_epochs}) while dev was still improving "
                     f"(best epoch {best}); a larger max_epochs may give a better model")
        return TrainResult(best, len(self.history), self.history, dev, test,
                           float(np.mean(seconds)) if seconds else 0.0,
                           str(self.out) if self.out is not None else None, model, stopped_by)


def _train_epoch(net: torch.nn.Module, batches: Any, optim: torch.optim.Optimizer,
                 sched: torch.optim.lr_scheduler.LRScheduler | None, weight: torch.Tensor | None,
                 ctx: distributed.Context, clip_norm: float, epoch: int, callbacks: Sequence[Callback],
                 note: Log | None = None, first_step: int = 1, sums: dict[str, float] | None = None) -> dict[str, float]:
    """One pass over ``batches`` (a tqdm over this process's batches): the optimiser steps and
    the sums of the loss and its parts, each weighted by this process's share of the batch,
    added to ``sums`` in place (a resumed epoch passes what its first ``first_step - 1`` steps
    added).  ``note``: where a log file (no progress bar) gets a line every
    :data:`PROGRESS_EVERY_S` seconds, since a transformer epoch can take a quarter of an hour."""
    device = ctx.device
    t0 = last_note = time.perf_counter()
    amp = device.type == "cuda"
    params = [p for g in optim.param_groups for p in g["params"]]
    sums = {"loss": 0.0} if sums is None else sums
    for step, batch in enumerate(batches, start=first_step):
        batch = batch.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            output = net(batch, class_weight=weight)
        share = distributed.loss_share(batch, weight, ctx)  # 1.0 in a single process
        if share is None:  # a (global) batch without any labelled utterance
            continue
        optim.zero_grad(set_to_none=True)
        distributed.ddp_loss(output.loss, share, params, ctx).backward()  # output.loss in a single process
        if clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        optim.step()
        if sched is not None:
            sched.step()
        if output.loss is not None:  # each process adds its share of the global batch's mean
            sums["loss"] += float(output.loss.detach()) * share
            batches.set_postfix(loss=f"{float(output.loss.detach()):.3f}")
        for k, v in output.parts.items():
            sums[k] = sums.get(k, 0.0) + v * share
        if note is not None and time.perf_counter() - last_note >= PROGRESS_EVERY_S:
            last_note = time.perf_counter()
            note(f"  in epoch {epoch}: {step}/{batches.total} steps in {last_note - t0:.0f}s, "
                 f"mean loss {sums['loss'] / step:.4f} so far")
        for cb in callbacks:
            cb.on_step(epoch, step)
    return sums


#: Seconds between progress lines of an epoch in a log (see :func:`_train_epoch`).
PROGRESS_EVERY_S = 300.0


class _MidEpochSaves(Callback):
    """Writes the run's resume state after the first step that ends ``resume_every_s`` seconds
    after the last write (or the epoch's start), with the loss sums ``_train_epoch`` is adding to."""

    def __init__(self, run: _Run, start_order: str, sums: dict[str, float], before: float) -> None:
        self.run, self.start_order, self.sums = run, start_order, sums
        self.t0 = self.last = time.perf_counter()
        self.before = before  # seconds this epoch had run before a resume

    def on_step(self, epoch: int, step: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.run.cfg.resume_every_s and step < self.run.n_batches:
            self.run.save_inside_epoch(epoch, step, self.start_order, self.sums, self.before + now - self.t0)
            self.last = time.perf_counter()


def _read_partial(raw: Any, epoch: int, n_batches: int, path: Path) -> dict[str, Any] | None:
    """A resume state's ``partial`` record (None: taken at an epoch's end), checked against
    the run it resumes: the epoch after the history's last, and fewer steps than an epoch has."""
    if raw is None:
        return None
    try:
        part = json.loads(raw)
        ok = (part["epoch"] == epoch and isinstance(part["steps"], int) and 0 < part["steps"] < n_batches
              and isinstance(part["sums"], dict) and all(isinstance(v, float) for v in part["sums"].values())
              and isinstance(part["seconds"], float))
    except (TypeError, ValueError, KeyError):
        ok = False
    if not ok:
        raise CheckpointError(f"{path}: corrupted resume state (its place inside epoch {epoch} does not fit this "
                              "run); remove it to start over")
    return part

def _checkpoint_meta(data: PreparedData, exp: ExperimentConfig, extra: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "dataset": data.corpus_name,
        "preset": exp.preset,
        "train_config": exp.train.to_dict(),
        "embeddings": data.provenance,
        "coverage": data.coverage,
        "data_checksums": data.data_checksums,
        "created_with": f"iein {__version__}, torch {torch.__version__}",
        **(extra or {}),
    }


# resume-state names re-exported: callers of the trainer reach them here
__all__ = ["PreparedData", "TrainResult", "prepare", "train", "check_stage1_data", "check_resume_state", "class_weights",
           "fingerprint", "build_for", "build_optimizer", "side_files", "RESUME_FORMAT", "load_resume_state",
           "read_resume_state"]
