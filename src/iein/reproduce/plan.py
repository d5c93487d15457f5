"""The list of trainings the paper's analysis needs, each identified by a run key.

A run key is ``dataset/setup/variant/T<iterations>/seed<seed>`` for IEIN and
``dataset/setup/<arch>/seed<seed>`` for a baseline; a run needed by several tables is
planned (and trained) once:

* Tables 1, 2, 4 and 5 -- the main model: IEIN with the preset's T (MELD 2, IEMOCAP 3, the
  paper's values), ``seeds_main`` seeds (the paper averages 12 runs);
* Tables 1 and 2 -- the paper's five baselines (section 3.2: CNN, cLSTM, cLSTM+CRF,
  DialogueRNN, DialogueGCN), each with its ``<dataset>-<arch>`` preset, ``seeds_baselines``
  seeds;
* Table 3 -- No Label, Gold Label and IEIN with T = 1, 2, 3, ``seeds_ablation`` seeds;
* Figure 3 -- IEIN with T = 0 ... 5 (T = 0 is the initial prediction P^0 alone), same seeds.

The main model's first ``seeds_ablation`` seeds therefore double as the T = preset point of
Table 3 and Figure 3.  Every row of Table 3 and every point of Figure 3 uses seeds
``0 .. seeds_ablation-1``, so their comparisons are between equal seed sets.

The two ablations do not iterate (the model outputs P^0 and one EC-Encoder pass P^1 whatever
``iterations`` says); their keys carry ``T1`` for that reason.

The *setup* (the key's second part) is the preset's name, then ``+<encoder>`` when the
encoder is not the preset's (``--encoder``), then the ``--set`` overrides in brackets, then
``+quick``: runs of different encoders or settings never share a key, and a plan on the
default settings keeps the keys of the runs recorded before encoders existed.

The plan is ordered seed by seed (every configuration's seed 0, then seed 1, ...), so a
reproduction stopped half way still has every table, with fewer seeds.

:func:`estimate` says how long the runs still to do will take, before they start.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ..errors import ConfigError
from ..training.config import BASELINES

DATASETS: tuple[str, ...] = ("meld", "iemocap")
TABLE3_ITERATIONS: tuple[int, ...] = (1, 2, 3)
FIGURE3_ITERATIONS: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
ABLATIONS: tuple[str, ...] = ("no_label", "gold_label")
#: Key ``T`` of the non-iterating ablations (one EC-Encoder pass).
ABLATION_ITERATIONS = 1

DEFAULT_SEEDS_MAIN = 12
DEFAULT_SEEDS_ABLATION = 5
DEFAULT_SEEDS_BASELINES = 5

#: ``--quick``: a tiny model, one epoch, a few dialogues, 2 seeds -- the whole pipeline in
#: seconds.  Its numbers are a smoke test, not results.  The shrink is per model and per
#: encoder (their size fields differ); an encoder without an entry (a pretrained
#: transformer) keeps its size.
QUICK_SEEDS = 2
QUICK_MODEL: dict[str, dict[str, Any]] = {
    "iein": {"emotion_dim": 4},
    "cnn": {},
    "clstm": {"hidden": 8, "dense": 8},
    "clstm_crf": {"hidden": 8, "dense": 8},
    "dialoguernn": {"global_dim": 8, "party_dim": 8, "emotion_dim": 8, "hidden_dim": 8},
    "dialoguegcn": {"hidden": 8, "graph_hidden": 8, "classifier_hidden": 8, "num_bases": 4},
}
QUICK_ENCODER: dict[str, dict[str, Any]] = {
    "glove-bigru": {"hidden": 8},
    "glove-cnn": {"n_filters": 8, "output_size": 8},
}
QUICK_TRAIN: dict[str, Any] = dict(max_epochs=1, min_epochs=0, patience=1, batch_size=8)
#: dialogues kept per split (train, dev, test) in quick mode.
QUICK_SIZES: dict[str, tuple[int, int, int]] = {"meld": (40, 10, 20), "iemocap": (6, 2, 3)}

ROLE_MAIN = "main"  # Tables 1, 2, 4, 5
ROLE_TABLE3 = "table3"
ROLE_FIGURE3 = "figure3"
ROLE_BASELINES = "baselines"  # the baseline rows of Tables 1, 2
ROLES: tuple[str, ...] = (ROLE_MAIN, ROLE_TABLE3, ROLE_FIGURE3, ROLE_BASELINES)
IEIN_ROLES: tuple[str, ...] = (ROLE_MAIN, ROLE_TABLE3, ROLE_FIGURE3)
#: ``--set`` keys the plan decides itself (each run's variant, T, seed and thread count).
PLANNED_SETTINGS: tuple[str, ...] = ("variant", "iterations", "seed", "threads")


def main_iterations(dataset: str, preset: str | None = None) -> int:
    """T of the main model: the preset's (the paper's: MELD 2, IEMOCAP 3)."""
    from ..training.config import get_preset

    return int(get_preset(preset or dataset).model.get("iterations", 2))


# --------------------------------------------------------------------------------------------
# --set overrides: canonical text, so equal settings give equal keys


def _bare_ok(text: str) -> bool:
    """Whether a string value can be written without quotes (``--set`` reads it back as the
    same string: it is not itself JSON)."""
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return True
    return False


def canonical_overrides(overrides: dict[str, Any] | Iterable[str] | None) -> tuple[str, ...]:
    """``--set`` overrides as sorted ``KEY=VALUE`` strings that :func:`parse_overrides`
    reads back to the same values (strings bare where that is unambiguous, else JSON)."""
    from ..training.experiment import parse_overrides

    if not overrides:
        return ()
    values = dict(overrides) if isinstance(overrides, dict) else parse_overrides(list(overrides))
    out = []
    for key in sorted(values):
        v = values[key]
        text = v if isinstance(v, str) and _bare_ok(v) else json.dumps(v, sort_keys=True, separators=(",", ":"))
        out.append(f"{key}={text}")
    return tuple(out)


def overrides_tag(overrides: Sequence[str]) -> str:
    """The setup suffix naming ``--set`` overrides: ``[encoder.model=minilm,lr=0.002]``,
    or ``[set-<sha1>]`` when that would be long or hold characters a key cannot (``/``)."""
    text = ",".join(overrides)
    if len(text) <= 48 and re.fullmatch(r"[A-Za-z0-9_.:=,+-]+", text):
        return f"[{text}]"
    return f"[set-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}]"


@dataclass(frozen=True)
class RunSpec:
    """One training: what to train and with which seed.  ``roles`` says which tables use it
    (informative only; the report decides from the plan record).

    ``arch`` is the context model: ``"iein"`` (``variant`` and ``iterations`` are IEIN's) or
    a baseline (``variant`` is then the arch's name and ``iterations`` 0: neither applies).
    ``encoder`` is None for the preset's; ``overrides`` are canonical ``--set`` strings."""

    dataset: str
    preset: str
    variant: str
    iterations: int
    seed: int
    quick: bool = False
    roles: tuple[str, ...] = field(default=(), compare=False)
    arch: str = "iein"
    encoder: str | None = None
    overrides: tuple[str, ...] = ()

    @property
    def is_baseline(self) -> bool:
        return self.arch != "iein"

    @property
    def setup(self) -> str:
        """The key's second part: preset, other encoder, overrides, quick."""
        from ..training.config import get_preset

        text = self.preset
        if self.encoder and self.encoder != get_preset(self.preset).encoder:
            text += f"+{self.encoder}"
        if self.overrides:
            text += overrides_tag(self.overrides)
        return text + ("+quick" if self.quick else "")

    @property
    def config_key(self) -> str:
        """The key without its seed: runs that differ only by seed share it."""
        if self.is_baseline:
            return f"{self.dataset}/{self.setup}/{self.arch}"
        return f"{self.dataset}/{self.setup}/{self.variant}/T{self.iterations}"

    @property
    def key(self) -> str:
        return f"{self.config_key}/seed{self.seed}"

    def experiment(self, threads: int = 1) -> Any:
        """The run's :class:`~iein.training.experiment.ExperimentConfig`: the preset's, then
        (IEIN) variant and T, then the quick shrink, then the ``--set`` overrides, then seed
        and thread count."""
        from ..training.experiment import parse_overrides, resolve_experiment
        from ..training.config import get_preset

        over: dict[str, Any] = {}
        if not self.is_baseline:
            over.update({"model.variant": self.variant, "model.iterations": self.iterations})
        if self.quick:
            encoder = self.encoder or get_preset(self.preset).encoder
            over.update({f"model.{k}": v for k, v in QUICK_MODEL.get(self.arch, {}).items()})
            over.update({f"encoder.{k}": v for k, v in QUICK_ENCODER.get(encoder, {}).items()})
            over.update({f"train.{k}": v for k, v in QUICK_TRAIN.items()})
        over.update(parse_overrides(list(self.overrides)))
        return resolve_experiment(self.dataset, self.preset, arch=self.arch, encoder=self.encoder,
                                  overrides=over, seed=self.seed, threads=threads)

    def model_config(self) -> dict[str, Any]:
        """Model config overrides (IEIN's, lambda included)."""
        return dict(self.experiment().model)

    def encoder_config(self) -> dict[str, Any]:
        return dict(self.experiment().encoder_config)

    def train_config(self, threads: int = 1) -> dict[str, Any]:
        return self.experiment(threads).train.to_dict()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["roles"] = list(self.roles)
        d["overrides"] = list(self.overrides)
        d["key"] = self.key
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        return cls(d["dataset"], d["preset"], d["variant"], int(d["iterations"]), int(d["seed"]),
                   bool(d.get("quick", False)), tuple(d.get("roles", ())), d.get("arch", "iein"),
                   d.get("encoder"), tuple(d.get("overrides", ())))


def parse_key(key: str) -> dict[str, Any]:
    """A run key's parts: ``dataset``, ``setup``, ``arch``, ``variant``, ``iterations``,
    ``seed`` (IEIN keys have five parts, baseline keys four)."""
    parts = key.split("/")
    if len(parts) == 5:
        d, setup, variant, t, seed = parts
        return {"dataset": d, "setup": setup, "arch": "iein", "variant": variant, "iterations": int(t[1:]),
                "seed": int(seed[4:])}
    if len(parts) == 4:
        d, setup, arch, seed = parts
        return {"dataset": d, "setup": setup, "arch": arch, "variant": arch, "iterations": 0, "seed": int(seed[4:])}
    raise ValueError(f"not a run key: {key!r}")


def _check_counts(**counts: int) -> None:
    for name, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{name} must be a positive integer, got {n!r}")


def expand_datasets(dataset: str | Sequence[str]) -> list[str]:
    """``"all"`` -> both datasets; a name or a list is checked against :data:`DATASETS`."""
    names = list(DATASETS) if dataset == "all" else [dataset] if isinstance(dataset, str) else list(dataset)
    for name in names:
        if name not in DATASETS:
            raise ConfigError(f"reproduce: unknown dataset {name!r} (known: {', '.join(DATASETS)}, all)")
    if not names:
        raise ConfigError("reproduce: no dataset given")
    return names


def parse_only(only: str | Iterable[str] | None, baselines: Sequence[str] = BASELINES) -> tuple[set[str], set[str]] | None:
    """``--only``: roles (main, table3, figure3, baselines) and/or model names (iein or a
    baseline), comma-separated; the plan keeps the union of the parts named.  Returns
    ``(roles, archs)``, or None for everything."""
    if only is None:
        return None
    names = [n.strip() for n in (only.split(",") if isinstance(only, str) else only) if n.strip()]
    if not names:
        raise ConfigError("--only: name at least one role or model")
    roles, archs = set(), set()
    for n in names:
        if n in ROLES:
            roles.add(n)
        elif n == "iein" or n in baselines:
            archs.add(n)
        else:
            raise ConfigError(f"--only {n}: not a part of the plan (roles: {', '.join(ROLES)}; models: "
                              f"{', '.join(('iein', *baselines))})")
    return roles, archs


def build_plan(
    datasets: str | Iterable[str] = "all",
    seeds_main: int = DEFAULT_SEEDS_MAIN,
    seeds_ablation: int = DEFAULT_SEEDS_ABLATION,
    quick: bool = False,
    presets: dict[str, str] | None = None,
    baselines: Sequence[str] = BASELINES,
    seeds_baselines: int | None = None,
    only: str | Iterable[str] | None = None,
    encoder: str | None = None,
    overrides: dict[str, Any] | Iterable[str] | None = None,
) -> list[RunSpec]:
    """Every run the analysis needs, deduplicated, in seed-major order.

    ``presets``: IEIN's preset per dataset (default: the dataset's); each baseline uses
    ``<dataset>-<arch>``, ``seeds_baselines`` seeds (default 5; ``--quick`` 2).  ``only``: see :func:`parse_only`.  ``encoder`` and ``overrides``
    (``--encoder``, ``--set``) apply to every run; they are checked here against every
    planned model, so a setting one of them lacks fails before any training."""
    from ..training.config import get_preset

    if seeds_baselines is None:
        seeds_baselines = QUICK_SEEDS if quick else DEFAULT_SEEDS_BASELINES
    _check_counts(seeds_main=seeds_main, seeds_ablation=seeds_ablation, seeds_baselines=seeds_baselines)
    names = expand_datasets(datasets if isinstance(datasets, str) else list(datasets))
    presets = {name: (presets or {}).get(name, name) for name in names}
    baselines = tuple(baselines)
    selected = parse_only(only, baselines)
    sets = canonical_overrides(overrides)
    for item in sets:
        key = item.partition("=")[0]
        if key.rpartition(".")[2] in PLANNED_SETTINGS:
            raise ConfigError(f"--set {key}: reproduce sets each run's {key.rpartition('.')[2]} itself "
                              "(the plan's variants, T sweep and seeds)")
    runs: dict[str, RunSpec] = {}

    def wanted(arch: str, role: str) -> bool:
        if selected is None:
            return True
        roles, archs = selected
        return role in roles or arch in archs

    def add(dataset: str, variant: str, t: int, seed: int, role: str, arch: str = "iein") -> None:
        preset = presets[dataset] if arch == "iein" else f"{dataset}-{arch}"
        enc = encoder if encoder and encoder != get_preset(preset).encoder else None
        spec = RunSpec(dataset, preset, variant, t, seed, quick, (), arch, enc, sets)
        old = runs.get(spec.key)
        roles = tuple(dict.fromkeys((old.roles if old else ()) + (role,)))
        runs[spec.key] = dataclasses.replace(spec, roles=roles)

    for seed in range(max(seeds_main, seeds_ablation, seeds_baselines if baselines else 1)):
        for dataset in names:
            t_main = main_iterations(dataset, presets[dataset])
            if seed < seeds_main and wanted("iein", ROLE_MAIN):
                add(dataset, "iein", t_main, seed, ROLE_MAIN)
            if seed < seeds_ablation:
                # longest runs (large T) first within a round: better packing on the pool
                for t in sorted(set(FIGURE3_ITERATIONS) | set(TABLE3_ITERATIONS) | {t_main}, reverse=True):
                    if (t in TABLE3_ITERATIONS or t == t_main) and wanted("iein", ROLE_TABLE3):
                        add(dataset, "iein", t, seed, ROLE_TABLE3)
                    if (t in FIGURE3_ITERATIONS or t == t_main) and wanted("iein", ROLE_FIGURE3):
                        add(dataset, "iein", t, seed, ROLE_FIGURE3)
                if wanted("iein", ROLE_TABLE3):
                    for variant in ABLATIONS:
                        add(dataset, variant, ABLATION_ITERATIONS, seed, ROLE_TABLE3)
            if seed < seeds_baselines:
                for arch in baselines:
                    if wanted(arch, ROLE_BASELINES):
                        add(dataset, arch, 0, seed, ROLE_BASELINES, arch)
    plan = list(runs.values())
    _check_settings(plan)
    return plan


def _check_settings(plan: Sequence[RunSpec]) -> None:
    """Resolve one run of every (dataset, setup, model): a ``--set`` key a planned model
    lacks, or a bad value, fails now with a hint, not in a worker after hours."""
    seen: set[tuple[str, str, str]] = set()
    for spec in plan:
        ident = (spec.dataset, spec.setup, spec.arch)
        if ident in seen:
            continue
        seen.add(ident)
        try:
            spec.experiment()
        except ConfigError as exc:
            hint = (f" (use --only to leave {spec.arch} out)" if spec.overrides else "")
            raise ConfigError(f"{spec.key}: {exc}{hint}") from None


# --------------------------------------------------------------------------------------------
# how long the runs still to do will take

#: Minutes one run takes, by (dataset, model), where this folder has no finished run of the
#: same configuration yet.  One worker process of two on a 2-core machine (the setting of
#: docs/results), 1 torch thread, at the patience the runs were measured with.
#:
#: * ``iein``: docs/results/runs.jsonl, mean wall minutes of the main configuration (12 runs
#:   each, patience rule: MELD 4, IEMOCAP 11): MELD T = 2 3.79 min = 17.8 s/epoch x 12.5
#:   epochs; IEMOCAP T = 3 4.28 min = 8.2 s/epoch x 30.5 epochs.  Measured before the GRU scan
#:   of :mod:`iein.layers`, which trains an epoch faster (docs/results.md), so they are high.
#: * baselines: the dev-best cells of their optimiser grid (``scripts/baseline_grid.py``, seed
#:   0, 1 thread, two grid processes on the 2-core machine), seconds per epoch x epochs run, at
#:   the presets' settings.  A two-stage run freezes the CNN row's model of its seed (trained by
#:   that run, :func:`iein.reproduce.worker.provided_stage1`), so its minutes are stage 2's only.
#:   IEMOCAP's CNN ran its grid cell's 150 epochs; at its cap of 300 it would take twice as long.
#:   Estimates, not promises.
FALLBACK_MINUTES: dict[tuple[str, str], float] = {
    ("meld", "iein"): 3.8, ("meld", "cnn"): 4.3, ("meld", "clstm"): 0.3, ("meld", "clstm_crf"): 0.8,
    ("meld", "dialoguernn"): 4.0, ("meld", "dialoguegcn"): 1.1,
    ("iemocap", "iein"): 4.3, ("iemocap", "cnn"): 13.6, ("iemocap", "clstm"): 0.5, ("iemocap", "clstm_crf"): 0.2,
    ("iemocap", "dialoguernn"): 2.0, ("iemocap", "dialoguegcn"): 0.3,
}
#: A ``--quick`` run (a few dialogues, one epoch, a tiny model), any model: 1-7 s measured
#: (``--quick --only baselines`` on MELD, in-process, loaded 2-core machine).
QUICK_RUN_MINUTES = 0.05
#: Where neither the folder nor the table knows the configuration (another dataset).
UNKNOWN_RUN_MINUTES = 5.0


def run_minutes_from_records(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Mean wall minutes of the finished runs of each configuration (key without seed)."""
    sums: dict[str, list[float]] = {}
    for r in records:
        if r.get("kind") == "run" and "wall_seconds" in r and "key" in r:
            sums.setdefault(r["key"].rpartition("/")[0], []).append(float(r["wall_seconds"]) / 60.0)
    return {k: sum(v) / len(v) for k, v in sums.items()}


@dataclass
class Estimate:
    """The runs still to do and how long they will take: ``minutes`` of wall time with
    ``workers`` processes, from ``measured`` runs' configurations finished in this folder
    and ``from_table`` runs priced by :data:`FALLBACK_MINUTES`."""

    todo: int
    done: int
    minutes: float
    workers: int
    measured: int
    from_table: int
    #: encoders of table-priced runs other than the presets' (the table measured those)
    unmeasured_encoders: tuple[str, ...] = ()

    def line(self) -> str:
        from ..utils import plural

        how = plural(self.workers, "worker") if self.workers else "in this process"
        if self.todo == 0:
            return f"plan: nothing to do ({self.done} done)"
        when = f"{self.minutes / 60:.1f} h" if self.minutes >= 90 else f"{max(self.minutes, 1):.0f} min"
        src = []
        if self.measured:
            src.append(f"{self.measured} priced by this folder's finished runs")
        if self.from_table:
            src.append(f"{self.from_table} by the built-in table" + (
                f", measured on the presets' encoders, not {', '.join(self.unmeasured_encoders)}: a guess"
                if self.unmeasured_encoders else ""))
        return (f"plan: {plural(self.todo, 'run')} to do ({self.done} done), about {when} "
                f"{'with ' if self.workers else ''}{how} ({'; '.join(src)})")


def estimate(plan: Sequence[RunSpec], records: Iterable[dict[str, Any]], workers: int,
             max_runs: int | None = None) -> Estimate:
    """How long the runs of ``plan`` not yet in ``records`` will take.

    A run costs the mean wall time of the finished runs of its configuration in
    ``records`` (same dataset, setup, variant and T, or baseline model: they ran on this
    machine under this kind of load), else :data:`FALLBACK_MINUTES`.  The pool runs
    ``workers`` at once (0: one, in this process), and cannot finish before its longest
    run: wall = max(total / workers, longest)."""
    records = list(records)
    done_keys = {r["key"] for r in records if r.get("kind") == "run" and "key" in r}
    stored = run_minutes_from_records(records)
    todo = [s for s in plan if s.key not in done_keys]
    if max_runs is not None:
        todo = todo[:max_runs]
    total, longest, measured = 0.0, 0.0, 0
    unmeasured: dict[str, None] = {}
    for spec in todo:
        minutes = stored.get(spec.config_key)
        if minutes is not None:
            measured += 1
        elif spec.quick:
            minutes = QUICK_RUN_MINUTES
        else:
            minutes = FALLBACK_MINUTES.get((spec.dataset, spec.arch), UNKNOWN_RUN_MINUTES)
            if spec.encoder:
                unmeasured[spec.encoder] = None
        total += minutes
        longest = max(longest, minutes)
    parallel = max(1, min(workers, len(todo))) if todo else 1
    return Estimate(len(todo), len(plan) - len([s for s in plan if s.key not in done_keys]),
                    max(total / parallel, longest), workers, measured, len(todo) - measured, tuple(unmeasured))


__all__ = [
    "ABLATIONS", "DATASETS", "Estimate", "FALLBACK_MINUTES", "FIGURE3_ITERATIONS", "QUICK_ENCODER", "QUICK_MODEL",
    "QUICK_SEEDS", "QUICK_SIZES", "QUICK_TRAIN", "ROLES", "RunSpec", "TABLE3_ITERATIONS", "build_plan",
    "canonical_overrides", "estimate", "expand_datasets", "main_iterations", "parse_key", "parse_only",
]
