"""One experiment from a resolved config to a trained model: the only place that knows the
two-stage recipe.  ``iein train`` and ``iein reproduce`` both call :func:`run_experiment`.

For a two-stage experiment (``ExperimentConfig.stage1()``, e.g. DialogueRNN on the dataset's
CNN, or IEIN on a fine-tuned transformer), stage 1 is trained into ``stage1_dir`` unless its
file is there already, then frozen (``on_frozen_encoder``), the data prepared for the frozen
encoder and stage 2 trained.  A stage-1 file is named by a hash of its experiment
(:func:`stage1_file`), so runs share it exactly when they would train the same one, whichever
command started them; a killed stage 1 resumes like any run.  Data preparation is the caller's
(``prepare(encoder, encoder_config)``: the CLI reads its files, reproduce keeps one prepared
corpus per worker), called only for the stages that train.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from .config import SPEED_ONLY_FIELDS
from .experiment import ExperimentConfig
from .trainer import PreparedData, TrainResult, check_resume_state, side_files, train

__all__ = ["Stage1", "Outcome", "stage1_file", "run_experiment", "ADDED_TRAIN_DEFAULTS"]

Prepare = Callable[[str, dict[str, Any]], PreparedData]

#: Training settings newer than the stage-1 file-name hash: left out of the hash at their
#: defaults, so the names of the stage-1 files already trained stay valid.
ADDED_TRAIN_DEFAULTS: dict[str, Any] = {"batch_unit": "dialogues", "schedule": "constant", "warmup": 0.0}


#: Speed-only training settings left out of the name; ``eval_batch_size`` is speed-only too but
#: was always part of the hash, so leaving it out now would rename every stage-1 file trained.
_NAME_FREE_FIELDS = tuple(k for k in SPEED_ONLY_FIELDS if k != "eval_batch_size")


def stage1_file(first: ExperimentConfig, dataset: str, folder: str | Path, quick: bool = False) -> Path:
    """Where the stage-1 model ``first`` lives in ``folder``: the name holds a hash of its
    experiment (speed-only settings aside) and of the data's name."""
    train_cfg = {k: v for k, v in first.train.to_dict().items()
                 if k not in _NAME_FREE_FIELDS and not (k in ADDED_TRAIN_DEFAULTS and v == ADDED_TRAIN_DEFAULTS[k])}
    ident = hashlib.sha256(json.dumps([dataset, first.to_dict() | {"train": train_cfg}, quick],
                                      sort_keys=True).encode()).hexdigest()[:12]
    return Path(folder) / f"{dataset}-{first.preset}-seed{first.train.seed}-{ident}.safetensors"


@dataclass
class Stage1:
    """What stage 1 did: its file, whether an existing one was reused, its training result."""

    path: Path
    reused: bool
    result: TrainResult | None
    seconds: float

    def record(self, first: ExperimentConfig) -> dict[str, Any]:
        """The ``stage1`` field of a reproduction record."""
        info: dict[str, Any] = {"preset": first.preset, "arch": first.arch, "encoder": first.encoder,
                                "checkpoint": str(self.path), "reused": self.reused}
        res = self.result
        if res is not None:
            info.update(best_epoch=res.best_epoch, epochs_run=res.epochs_run, stopped_by=res.stopped_by,
                        dev_score=res.history[res.best_epoch - 1].get("dev_score"))
        info["wall_seconds"] = round(self.seconds, 3)
        return info


@dataclass
class Outcome:
    """A finished experiment: stage 2's result, the experiment as trained (on the frozen
    stage-1 encoder for a two-stage one), its data, and stage 1 (None when single-stage)."""

    result: TrainResult
    experiment: ExperimentConfig
    data: PreparedData
    stage1: Stage1 | None


def _stage1(first: ExperimentConfig, path: Path, prepare: Prepare, *, force: bool, resume: bool,
            check: Callable[[Path], None] | None, log: Callable[[str], None], **train_kwargs: Any) -> Stage1:
    """Reuse ``path`` (after ``check``), or train stage 1 into it (``resume`` continues a killed
    one, ``force`` retrains)."""
    t0 = time.perf_counter()
    resume = resume and side_files(path)[1].is_file()
    if path.exists() and not force:
        if check is not None:
            check(path)
        log(f"two-stage: reusing stage 1 {path} (--force retrains it)")
        return Stage1(path, True, None, time.perf_counter() - t0)
    check_resume_state(path, resume, force)
    if force and not resume and side_files(path)[1].is_file():
        side_files(path)[1].unlink()  # --force: stage 1 starts over
    log(f"two-stage: stage 1 trains {first.preset} ({first.arch} on {first.encoder}) into {path}"
        + (" (resumed)" if resume else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    result = train(prepare(first.encoder, first.encoder_config), first, out=path, resume=resume, log=log,
                   **train_kwargs)
    return Stage1(path, False, result, time.perf_counter() - t0)


def run_experiment(exp: ExperimentConfig, prepare: Prepare, *, dataset: str, out: Path | None = None,
                   stage1_dir: str | Path | None = None, quick: bool = False, force: bool = False,
                   resume: bool = False, check_stage1: Callable[[Path], None] | None = None,
                   log: Callable[[str], None] = lambda _msg: None, **train_kwargs: Any) -> Outcome:
    """Train ``exp`` (both stages of a two-stage one, see the module doc) on the data that
    ``prepare`` gives; ``out`` is stage 2's checkpoint (None: not written), ``stage1_dir``
    where stage-1 files live (default: beside ``out``).  ``resume`` continues whichever stage
    was killed; ``force`` retrains stage 1 too.  ``train_kwargs`` go to :func:`train` for both
    stages (``progress``, ``evaluate_test`` ...)."""
    first = exp.stage1()
    stage1 = None
    if first is not None:
        folder = stage1_dir if stage1_dir is not None else (out.parent if out is not None else None)
        if folder is None:
            raise ConfigError("a two-stage experiment needs a folder for its stage-1 model")
        stage1_kwargs = {k: v for k, v in train_kwargs.items() if k != "extra_meta"}
        stage1 = _stage1(first, stage1_file(first, dataset, folder, quick), prepare, force=force, resume=resume,
                         check=check_stage1, log=log, **stage1_kwargs)
        exp = exp.on_frozen_encoder(str(stage1.path))
        resume = resume and out is not None and side_files(out)[1].is_file()  # --resume may have been stage 1's
    resume = resume and out is not None  # nothing to resume from without a checkpoint path
    data = prepare(exp.encoder, exp.encoder_config)
    if out is not None:
        log(f"training {out} (best-so-far in {side_files(out)[0].name}; the target is written when the run ends)")
    result = train(data, exp, out=out, resume=resume, log=log, **train_kwargs)
    return Outcome(result, exp, data, stage1)
