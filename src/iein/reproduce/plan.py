"""The list of trainings the paper's analysis needs, each identified by a run key.

A run key is ``dataset/preset/variant/T<iterations>/seed<seed>``; a run needed by several
tables is planned (and trained) once:

* Tables 1, 2, 4 and 5 -- the main model: IEIN with the preset's T (MELD 2, IEMOCAP 3, the
  paper's values), ``seeds_main`` seeds (the paper averages 12 runs);
* Table 3 -- No Label, Gold Label and IEIN with T = 1, 2, 3, ``seeds_ablation`` seeds;
* Figure 3 -- IEIN with T = 0 ... 5 (T = 0 is the initial prediction P^0 alone), same seeds.

The main model's first ``seeds_ablation`` seeds therefore double as the T = preset point of
Table 3 and Figure 3.  Every row of Table 3 and every point of Figure 3 uses seeds
``0 .. seeds_ablation-1``, so their comparisons are between equal seed sets.

The two ablations do not iterate (the model outputs P^0 and one EC-Encoder pass P^1 whatever
``iterations`` says); their keys carry ``T1`` for that reason.

The plan is ordered seed by seed (every configuration's seed 0, then seed 1, ...), so a
reproduction stopped half way still has every table, with fewer seeds.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ..errors import ConfigError

DATASETS: tuple[str, ...] = ("meld", "iemocap")
TABLE3_ITERATIONS: tuple[int, ...] = (1, 2, 3)
FIGURE3_ITERATIONS: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
ABLATIONS: tuple[str, ...] = ("no_label", "gold_label")
#: Key ``T`` of the non-iterating ablations (one EC-Encoder pass).
ABLATION_ITERATIONS = 1

DEFAULT_SEEDS_MAIN = 12
DEFAULT_SEEDS_ABLATION = 5

#: ``--quick``: a tiny model, one epoch, a few dialogues, 2 seeds -- the whole pipeline in
#: seconds.  Its numbers are a smoke test, not results.
QUICK_SEEDS = 2
QUICK_MODEL: dict[str, Any] = {"encoder.hidden": 8, "emotion_dim": 4}
QUICK_TRAIN: dict[str, Any] = dict(max_epochs=1, min_epochs=0, patience=1, batch_size=8)
#: dialogues kept per split (train, dev, test) in quick mode.
QUICK_SIZES: dict[str, tuple[int, int, int]] = {"meld": (40, 10, 20), "iemocap": (6, 2, 3)}

ROLE_MAIN = "main"  # Tables 1, 2, 4, 5
ROLE_TABLE3 = "table3"
ROLE_FIGURE3 = "figure3"


def main_iterations(dataset: str, preset: str | None = None) -> int:
    """T of the main model: the preset's (the paper's: MELD 2, IEMOCAP 3)."""
    from ..training.config import get_preset

    return int(get_preset(preset or dataset).model.get("iterations", 2))


@dataclass(frozen=True)
class RunSpec:
    """One training: what to train and with which seed.  ``roles`` says which tables use it
    (informative only; the report decides from the plan record)."""

    dataset: str
    preset: str
    variant: str
    iterations: int
    seed: int
    quick: bool = False
    roles: tuple[str, ...] = field(default=(), compare=False)

    @property
    def key(self) -> str:
        preset = self.preset + ("+quick" if self.quick else "")
        return f"{self.dataset}/{preset}/{self.variant}/T{self.iterations}/seed{self.seed}"

    def experiment(self, threads: int = 1) -> Any:
        """The run's :class:`~iein.training.experiment.ExperimentConfig`: the preset's, then
        variant and T, then seed and thread count, then the quick shrink."""
        from ..training.experiment import resolve_experiment

        over: dict[str, Any] = {"variant": self.variant, "iterations": self.iterations}
        if self.quick:
            over.update(QUICK_MODEL)
            over.update({f"train.{k}": v for k, v in QUICK_TRAIN.items()})
        return resolve_experiment(self.dataset, self.preset, overrides=over, seed=self.seed, threads=threads)

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
        d["key"] = self.key
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        return cls(d["dataset"], d["preset"], d["variant"], int(d["iterations"]), int(d["seed"]),
                   bool(d.get("quick", False)), tuple(d.get("roles", ())))


def _check_counts(seeds_main: int, seeds_ablation: int) -> None:
    for name, n in (("seeds_main", seeds_main), ("seeds_ablation", seeds_ablation)):
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


def build_plan(
    datasets: str | Iterable[str] = "all",
    seeds_main: int = DEFAULT_SEEDS_MAIN,
    seeds_ablation: int = DEFAULT_SEEDS_ABLATION,
    quick: bool = False,
    presets: dict[str, str] | None = None,
) -> list[RunSpec]:
    """Every run the analysis needs, deduplicated, in seed-major order."""
    _check_counts(seeds_main, seeds_ablation)
    names = expand_datasets(datasets if isinstance(datasets, str) else list(datasets))
    presets = {name: (presets or {}).get(name, name) for name in names}
    runs: dict[str, RunSpec] = {}

    def add(dataset: str, variant: str, t: int, seed: int, role: str) -> None:
        spec = RunSpec(dataset, presets[dataset], variant, t, seed, quick)
        old = runs.get(spec.key)
        roles = tuple(dict.fromkeys((old.roles if old else ()) + (role,)))
        runs[spec.key] = dataclasses.replace(spec, roles=roles)

    for seed in range(max(seeds_main, seeds_ablation)):
        for dataset in names:
            t_main = main_iterations(dataset, presets[dataset])
            if seed < seeds_main:
                add(dataset, "iein", t_main, seed, ROLE_MAIN)
            if seed < seeds_ablation:
                # longest runs (large T) first within a round: better packing on the pool
                for t in sorted(set(FIGURE3_ITERATIONS) | set(TABLE3_ITERATIONS) | {t_main}, reverse=True):
                    if t in TABLE3_ITERATIONS or t == t_main:
                        add(dataset, "iein", t, seed, ROLE_TABLE3)
                    if t in FIGURE3_ITERATIONS or t == t_main:
                        add(dataset, "iein", t, seed, ROLE_FIGURE3)
                for variant in ABLATIONS:
                    add(dataset, variant, ABLATION_ITERATIONS, seed, ROLE_TABLE3)
    return list(runs.values())


__all__ = [
    "ABLATIONS", "DATASETS", "FIGURE3_ITERATIONS", "QUICK_MODEL", "QUICK_SEEDS", "QUICK_SIZES",
    "QUICK_TRAIN", "RunSpec", "TABLE3_ITERATIONS", "build_plan", "expand_datasets", "main_iterations",
]
