"""Benchmark IEIN (a benchmark, not a test): accuracy over seeds, speed and memory.

For each dataset: train one model per seed with the dataset's preset (selection on dev),
score test, and report test weighted-F1 mean ± std, per-class F1 mean, per-step weighted-F1,
seconds per training epoch, inference utterances/s and the peak RSS of the process.

    python bench/bench_iein.py --datasets meld iemocap --seeds 0 1 2 --data-root ../shared/data

Any other model or encoder is benchmarked the same way (``--arch dialoguernn``,
``--encoder glove-cnn``, ``--set KEY=VALUE`` as in ``iein train``); the preset, arch,
encoder and overrides resolve exactly as in ``iein train``
(:func:`iein.training.experiment.resolve_experiment`).

Writes ``<out>/<dataset>.json`` (every run, full scores) and prints a Markdown table that
goes into docs/results.md together with this exact command.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from iein import __version__
from iein.atomic import atomic_write_json
from iein.data.registry import load_corpus
from iein.evaluation.evaluate import predict_steps
from iein.evaluation.metrics import format_mean_std
from iein.training.experiment import ExperimentConfig, parse_overrides, resolve_experiment
from iein.training.trainer import prepare, train
from iein.utils import peak_rss_mb


def inference_speed(model, data, threads: int, min_utts: int = 20000) -> float:
    """Utterances per second of batched inference (all steps) over ``data`` repeated."""
    torch.set_num_threads(threads)
    n = sum(len(c) for c in data)
    reps = max(1, -(-min_utts // n))
    predict_steps(model, data[:8])  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        predict_steps(model, data)
    return reps * n / (time.perf_counter() - t0)


def experiment(name: str, seed: int, args: argparse.Namespace) -> ExperimentConfig:
    """The run's configuration, resolved as ``iein train`` resolves its flags."""
    overrides = parse_overrides(args.set)
    for section, js in (("model", args.model_json), ("encoder", args.encoder_json), ("train", args.train_json)):
        overrides.update({f"{section}.{k}": v for k, v in json.loads(js).items()})
    return resolve_experiment(name, args.preset, args.arch, args.encoder, overrides, seed=seed,
                              threads=args.threads, max_epochs=args.max_epochs or None)


def run_dataset(name: str, args: argparse.Namespace) -> dict:
    corpus = load_corpus(name, Path(args.data_root) / name if args.data_root else None)
    first = experiment(name, args.seeds[0], args)  # fails on a bad setting before any data is featurized
    data = prepare(corpus, args.embeddings, first.encoder, first.encoder_config)
    runs = []
    for seed in args.seeds:
        exp = experiment(name, seed, args)
        t0 = time.perf_counter()
        res = train(data, exp, progress=False)
        wall = time.perf_counter() - t0
        ups = inference_speed(res.model, data.splits["test"], args.threads)
        run = {"seed": seed, "best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "wall_s": wall,
               "seconds_per_epoch": res.seconds_per_epoch, "inference_utt_per_s": ups,
               "dev": res.dev, "test": res.test, "history": res.history}
        runs.append(run)
        print(f"[{name}] seed {seed}: test w-F1 {res.test['final']['weighted_f1']:.2f} "
              f"(dev {res.dev['final']['weighted_f1']:.2f}, best epoch {res.best_epoch}/{res.epochs_run}), "
              f"{res.seconds_per_epoch:.1f} s/epoch, {ups:.0f} utt/s", file=sys.stderr, flush=True)
    return {"dataset": name, "preset": first.preset, "arch": first.arch, "encoder": first.encoder,
            "model": first.model, "encoder_config": first.encoder_config, "embeddings": data.provenance,
            "coverage": {k: v for k, v in data.coverage.items() if k != "oov"}, "data_checksums": data.data_checksums,
            "runs": runs, "peak_rss_mb": peak_rss_mb()}


def summarise(result: dict) -> str:
    runs = result["runs"]
    labels = list(runs[0]["test"]["final"]["per_class_f1"])
    wf1 = [r["test"]["final"]["weighted_f1"] for r in runs]
    lines = [
        f"### {result['dataset']}: {result['arch']} on {result['encoder']} (preset `{result['preset']}`, "
        f"{len(runs)} seeds, vectors {result['embeddings'].get('name')})",
        "",
        "| metric | value |", "|---|---|",
        f"| test weighted-F1 | {format_mean_std(wf1)} |",
        f"| dev weighted-F1 | {format_mean_std([r['dev']['final']['weighted_f1'] for r in runs])} |",
        f"| test accuracy | {format_mean_std([r['test']['final']['accuracy'] for r in runs])} |",
    ]
    n_steps = len(runs[0]["test"]["steps"])
    for s in range(n_steps):
        lines.append(f"| test w-F1 at step {s} | {format_mean_std([r['test']['steps'][s]['weighted_f1'] for r in runs])} |")
    lines += [
        f"| best epoch | {', '.join(str(r['best_epoch']) for r in runs)} |",
        f"| seconds per training epoch | {format_mean_std([r['seconds_per_epoch'] for r in runs], 1)} |",
        f"| inference utterances/s | {format_mean_std([r['inference_utt_per_s'] for r in runs], 0)} |",
        f"| peak RSS (MB) | {result['peak_rss_mb']:.0f} |",
        "",
        "| " + " | ".join(labels) + " |", "|" + "---|" * len(labels),
        "| " + " | ".join(format_mean_std([r["test"]["final"]["per_class_f1"][l] for r in runs]) for l in labels) + " |",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["meld", "iemocap"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--preset", help="preset name (default: the dataset's own, for --arch)")
    ap.add_argument("--arch", help="context model (default: the preset's; see `iein presets`)")
    ap.add_argument("--encoder", help="utterance encoder (default: the preset's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a model/encoder/training setting, as in `iein train`")
    ap.add_argument("--embeddings", help="GloVe file (default GloVe 6B 50d)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-epochs", type=int)
    ap.add_argument("--model-json", default="{}", help="model config overrides as JSON")
    ap.add_argument("--encoder-json", default="{}", help="encoder config overrides as JSON")
    ap.add_argument("--train-json", default="{}", help="train config overrides as JSON")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    out = Path(args.out)
    header = (f"iein {__version__}, torch {torch.__version__}, python {platform.python_version()}, "
              f"{platform.machine()}, {args.threads} threads; command: python {' '.join(sys.argv)}")
    print(header)
    for name in args.datasets:
        result = run_dataset(name, args)
        result["header"] = header
        stem = name if result["arch"] == "iein" else f"{name}-{result['arch']}"
        atomic_write_json(out / f"{stem}.json", result)
        print(summarise(result), flush=True)


if __name__ == "__main__":
    main()
