"""One trainer for every model on every encoder (flair's ``ModelTrainer(model, corpus)``).

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
  every RNG, history, early-stopping state), written atomically every epoch;
  ``resume=True`` continues from it and gives bit-identical results on CPU.  It holds
  tensors and plain values only and is read with ``torch.load(weights_only=True)``.

Both side files are removed when the run ends.

Under ``torchrun`` the same function trains data-parallel (:mod:`.distributed`): rank 0
evaluates, logs and writes every file; the checkpoint is the same as a single process's.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
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
from ..utils import atomic_path, plural, remove_stale_temporaries, set_seed
from . import distributed
from .batch_plan import epoch_order, lr_schedule, n_steps, utterance_items
from .config import TrainConfig
from .early_stopping import EarlyStopping, cut_by_cap
from .experiment import ExperimentConfig

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
    release = getattr(featurizer, "release", None)
    if release is not None:  # e.g. a frozen transformer's base model: not needed for training
        release()
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
    learning rate).  The fused kernel where the parameters' device has one: the same update
    (bit-identical on MELD's IEIN after 5 steps) in one pass, 4 ms -> 0.8 ms a step on this CPU."""
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


def side_files(out: str | Path) -> tuple[Path, Path]:
    """``(best-so-far checkpoint, resume state)`` of a run writing to ``out``."""
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}.best.safetensors"), out.with_name(f"{stem}.resume.pt")


def run_identity(data: PreparedData, exp: ExperimentConfig) -> str:
    """What a resume state must match: the experiment (minus speed-only settings), the data
    and the code version."""
    ident = exp.to_dict()
    for key in ("threads", "device", "eval_batch_size"):
        ident["train"].pop(key, None)
    blob = json.dumps({"exp": ident, "data": data.data_checksums, "labels": list(data.labels),
                       "features": data.featurizer.key(), "version": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _rng_state(rng: np.random.Generator, device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": json.dumps(rng.bit_generator.state),
             "python": json.dumps(random.getstate()), "numpy_global": json.dumps(
                 [np.random.get_state()[0], np.random.get_state()[1].tolist(), *np.random.get_state()[2:]])}
    if device.type == "cuda":  # dropout on a GPU draws from the device's generator
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(states: list[dict[str, Any]], rng: np.random.Generator, seed: int,
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


def train(
    data: PreparedData,
    exp: ExperimentConfig,
    out: str | Path | None = None,
    progress: bool | None = None,
    log: Log = _stderr,
    evaluate_test: bool = True,
    resume: bool = False,
    extra_meta: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``exp`` on ``data['train']``, select on ``data['dev']``, score ``data['test']``.

    With ``out``, the best model so far and a per-epoch resume state are kept beside it
    (module doc), and ``out`` is written when the run ends.  ``resume`` continues from the
    resume state (refused if it belongs to another configuration or data)."""
    cfg = exp.train
    if not data.splits.get("dev"):
        raise ConfigError("no dev conversations: model selection needs a dev split")
    if progress is None:
        progress = sys.stderr.isatty()
    exclude = (cfg.exclude_label,) if cfg.exclude_label else ()
    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {cfg.device!r}: CUDA is not available on this machine")
    ctx = distributed.init(cfg.device)  # single process unless started by torchrun
    distributed.check_batch_size(cfg.batch_size, ctx)
    device = ctx.device
    if not ctx.is_main:  # rank 0 logs and writes every file
        log, progress = (lambda _: None), False
    best_path, resume_path = side_files(out) if out is not None and ctx.is_main else (None, None)
    for side in (best_path, resume_path):
        if side is not None:  # temporaries of a write that a kill interrupted
            remove_stale_temporaries(side.parent, side.name)
    identity = run_identity(data, exp)
    pause_at = os.environ.get(PAUSE_ENV)

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        set_seed(cfg.seed)
        model = build_for(data, exp).to(device)
        distributed.seed_rank(cfg.seed, ctx)
        optim = build_optimizer(model, cfg)
        if cfg.class_weighting != "none" and not model.supports_class_weight:
            raise ConfigError(f"class_weighting {cfg.class_weighting!r}: model {exp.arch} has no per-utterance "
                              "loss to weight (use class_weighting=none)")
        weight = class_weights(data.splits["train"], len(data.labels), cfg.class_weighting)
        weight = weight.to(device) if weight is not None else None
        rng = np.random.default_rng(cfg.seed)
        train_set, dev_set = data.splits["train"], data.splits["dev"]
        if cfg.batch_unit == "utterances":
            if model.reads_context:
                raise ConfigError(f"batch_unit 'utterances': model {exp.arch} reads the dialogue around each "
                                  "utterance, so it trains on whole dialogues (batch_unit=dialogues)")
            train_set = utterance_items(train_set)
        n_batches = n_steps(len(train_set), cfg.batch_size)
        sched = lr_schedule(optim, cfg, n_batches)
        collate = model.utterance_encoder.collate

        stopper = EarlyStopping(cfg.patience, cfg.min_epochs)
        best_state: dict[str, torch.Tensor] | None = None
        history: list[dict[str, Any]] = []
        start_epoch = 1
        if resume:
            def read_state() -> dict[str, Any]:
                if out is None or not side_files(out)[1].is_file():
                    raise ConfigError(f"--resume: no resume state {side_files(out)[1] if out else ''} "
                                      "(nothing to continue)")
                return load_resume_state(side_files(out)[1], identity)

            st = distributed.from_main(read_state, ctx)  # read on rank 0 (its node may be the only one with it)
            if st.get("unverified"):
                log(f"note: {side_files(out)[1]} was written before resume states were checksummed: not verified")
            model.load_state_dict(st["model"])
            optim.load_state_dict(st["optimizer"])
            if sched is not None:
                sched.load_state_dict(st["scheduler"])
            best_state = st["best_model"]
            history = json.loads(st["history"])
            stopper.best_score, stopper.best_epoch = float(st["best_score"]), int(st["best_epoch"])
            _set_rng_state(st["rng"], rng, cfg.seed, ctx)
            start_epoch = len(history) + 1
            log(f"resuming after epoch {len(history)} (best epoch {stopper.best_epoch}) from {side_files(out)[1]}")
        net = distributed.wrap(model, ctx)  # what trains; ``model`` is evaluated and saved
        meta = _checkpoint_meta(data, exp, extra_meta)
        metric_name = "micro-F1 excl." if exclude else "w-F1"
        stopped = bool(history) and stopper.should_stop(len(history))
        for epoch in range(start_epoch, cfg.max_epochs + 1):
            if stopped:
                break
            t0 = time.perf_counter()
            model.train()
            order = epoch_order(train_set, cfg, rng)  # the same on every process
            bar = tqdm(distributed.rank_batches(train_set, order, cfg.batch_size, collate, ctx), total=n_batches,
                       desc=f"epoch {epoch}", leave=False, disable=not progress)
            sums = _train_epoch(net, bar, optim, sched, weight, ctx, cfg.clip_norm, epoch, pause_at,
                                note=None if progress else log)
            train_seconds = time.perf_counter() - t0
            sums = distributed.all_sum(sums, ctx)  # each process added its share of the global means
            dev = None
            row: dict[str, Any] | None = None
            if ctx.is_main:
                dev = evaluate_model(model, dev_set, data.labels, exclude, cfg.eval_batch_size)
                _, score = selection_metric(dev)
                row = {k: v / n_batches for k, v in sums.items()}
                row.update(epoch=epoch, dev_step_wf1=[s["weighted_f1"] for s in dev["steps"]], dev_score=score,
                           seconds=round(train_seconds, 2))
            row = distributed.broadcast(row, ctx)  # rank 0's dev score decides on every process
            assert row is not None
            score = row["dev_score"]
            history.append(row)
            improved = stopper.update(epoch, score)
            if improved:
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                if best_path is not None:
                    save_checkpoint(best_path, model, data.labels, **meta, best_epoch=epoch, dev=dev)
            terms = ", ".join(f"{k} {row[k]:.4f}" for k in sums if k != "loss")
            steps_txt = "/".join(f"{x:.2f}" for x in row["dev_step_wf1"])
            log(f"epoch {epoch:3d} | loss {row['loss']:.4f}{f' ({terms})' if terms else ''} | dev {metric_name} "
                f"{score:.2f} | dev w-F1 per step {steps_txt} | {train_seconds:.1f}s{' *' if improved else ''}")
            stopped = stopper.should_stop(epoch)
            if out is not None:
                rng_states = distributed.all_gather(_rng_state(rng, device), ctx)  # every process's dropout stream
                if resume_path is not None:
                    _save_resume(resume_path, identity, model, optim, sched, best_state, history, stopper, rng_states)
            if stopped:
                log(f"early stop: no dev improvement for {plural(cfg.patience, 'epoch')} (best epoch {stopper.best_epoch})")
            if pause_at == f"{epoch}":
                _pause(pause_at)

        if best_state is None:
            raise ConfigError("no epoch was trained (max_epochs reached before the first epoch)")
        model.load_state_dict(best_state)
        model.eval()
        dev, test = None, None
        if ctx.is_main:
            dev = evaluate_model(model, dev_set, data.labels, exclude, cfg.eval_batch_size)
            if evaluate_test and data.splits.get("test"):
                test = evaluate_model(model, data.splits["test"], data.labels, exclude, cfg.eval_batch_size)
            if out is not None:
                save_checkpoint(out, model, data.labels, **meta, best_epoch=stopper.best_epoch, dev=dev, test=test)
                for side in (best_path, resume_path):
                    with contextlib.suppress(FileNotFoundError):
                        side.unlink()  # type: ignore[union-attr]
                    remove_stale_temporaries(side.parent, side.name)  # type: ignore[union-attr]
        dev, test = distributed.broadcast((dev, test), ctx)
        seconds = [h["seconds"] for h in history]
        stopped_by = ("patience" if stopped else "cap" if cut_by_cap(len(history), stopper.best_epoch, cfg.max_epochs,
                                                                    cfg.patience) else "max_epochs")
        if stopped_by == "cap":
            log(f"warning: stopped by the epoch cap (max_epochs {cfg.max_epochs}) while dev was still improving "
                f"(best epoch {stopper.best_epoch}); a larger max_epochs may give a better model")
        return TrainResult(stopper.best_epoch, len(history), history, dev, test,
                           float(np.mean(seconds)) if seconds else 0.0,
                           str(out) if out is not None else None, model, stopped_by)
    finally:
        torch.set_num_threads(prev_threads)


def _train_epoch(net: torch.nn.Module, batches: Any, optim: torch.optim.Optimizer,
                 sched: torch.optim.lr_scheduler.LRScheduler | None, weight: torch.Tensor | None,
                 ctx: distributed.Context, clip_norm: float, epoch: int, pause_at: str | None,
                 note: Log | None = None) -> dict[str, float]:
    """One pass over ``batches`` (a tqdm over this process's batches): the optimiser steps and
    the sums of the loss and its parts, each weighted by this process's share of the batch.
    ``pause_at`` is the test hook's point (:data:`PAUSE_ENV`).  ``note``: where a log file
    (no progress bar) gets a line every :data:`PROGRESS_EVERY_S` seconds, since a transformer
    epoch can take a quarter of an hour."""
    device = ctx.device
    t0 = last_note = time.perf_counter()
    amp = device.type == "cuda"
    params = [p for g in optim.param_groups for p in g["params"]]
    sums: dict[str, float] = {"loss": 0.0}
    for step, batch in enumerate(batches, start=1):
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
        if pause_at == f"{epoch}.{step}":
            _pause(pause_at)
    return sums


def _save_resume(path: Path, identity: str, model: ConversationModel, optim: torch.optim.Optimizer,
                 sched: torch.optim.lr_scheduler.LRScheduler | None,
                 best_state: dict[str, torch.Tensor] | None, history: list[dict[str, Any]],
                 stopper: EarlyStopping, rng_states: list[dict[str, Any]]) -> None:
    state = {
        "format": RESUME_FORMAT, "identity": identity,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optim.state_dict(), "best_model": best_state,
        "scheduler": sched.state_dict() if sched is not None else None,
        "history": json.dumps(history), "best_score": stopper.best_score, "best_epoch": stopper.best_epoch,
        "rng": rng_states,  # one per process (rank 0's first)
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    envelope = {"format": RESUME_FORMAT, "sha256": hashlib.sha256(data).hexdigest(),
                "payload": torch.frombuffer(bytearray(data), dtype=torch.uint8)}
    with atomic_path(path) as tmp:
        torch.save(envelope, tmp)


#: Seconds between progress lines of an epoch in a log (see :func:`_train_epoch`).
PROGRESS_EVERY_S = 300.0

#: Test hook (``tests/test_resume.py``): ``IEIN_TEST_PAUSE_AT=E`` makes training stop and
#: sleep once epoch E's resume state is written, ``E.B`` right after the B-th optimiser step
#: of epoch E, so a test can SIGKILL the process at a known point.  Unset in normal use.
PAUSE_ENV = "IEIN_TEST_PAUSE_AT"


def _pause(point: str) -> None:
    print(f"{PAUSE_ENV}={point}: paused", file=sys.stderr, flush=True)
    time.sleep(3600)


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


__all__ = ["PreparedData", "TrainResult", "prepare", "train", "check_stage1_data", "check_resume_state", "class_weights", "fingerprint", "build_for",
           "build_optimizer", "side_files"]
