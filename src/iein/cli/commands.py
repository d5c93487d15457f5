"""What each ``iein`` command does with its parsed arguments: a thin layer over the library.

Each ``cmd_<name>`` reads :mod:`argparse`'s namespace (:mod:`iein.cli.parsers` defines the
arguments), calls the library and prints or writes what the user asked for; user errors are
raised as :class:`iein.errors.IeinError`, which :func:`iein.cli.main` prints as one line.
Heavy modules are imported inside the commands, so that ``iein --help`` and a mistyped
argument answer without loading torch.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, IeinError

def _load_corpus(args: argparse.Namespace, default_labels: tuple[str, ...] | None = None):
    from ..data.registry import load_corpus

    labels = tuple(x.strip() for x in args.labels.split(",")) if getattr(args, "labels", None) else default_labels
    if args.dataset:
        return load_corpus(args.dataset, args.data_dir)
    if not args.train and not args.test:
        raise ConfigError("give --dataset NAME, or your own files with --train/--dev[/--test]")
    return load_corpus("custom", train=args.train, dev=args.dev, test=args.test, labels=labels)


def _check_train_args(args: argparse.Namespace) -> None:
    """Cheap checks of ``iein train``'s flags and files, before torch is imported (seconds on
    a busy machine) or any data is read; errors name the flag."""
    for flag, value, low in (("--epochs", args.epochs, 1), ("--threads", args.threads, 1), ("--seed", args.seed, 0)):
        if value is not None and value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}")
    if args.dataset and (args.train or args.dev or args.test):
        raise ConfigError("give --dataset NAME or your own files (--train/--dev/--test), not both")
    if args.encoder_from is not None:
        if args.encoder not in (None, "frozen"):
            raise ConfigError(f"--encoder-from freezes the encoder of {args.encoder_from}: do not also give "
                              f"--encoder {args.encoder}")
        if not Path(args.encoder_from).is_file():
            raise ConfigError(f"--encoder-from {args.encoder_from}: file not found")
    if not args.dataset:
        if not args.train:
            raise ConfigError("give --dataset NAME, or your own files with --train (and --dev, or --dev-fraction)")
        if not args.dev and args.dev_fraction is None:
            raise ConfigError("no --dev file: model selection (the best epoch) needs dev conversations that are "
                              "not trained on; give --dev FILE, or --dev-fraction 0.1 to hold out 10%% of the "
                              "train dialogues (seeded)".replace("%%", "%"))
        if args.dev and args.dev_fraction is not None:
            raise ConfigError("give --dev or --dev-fraction, not both")
        given = {flag: Path(p).resolve() for flag, p in (("--dev", args.dev), ("--test", args.test))
                 if p not in (None, "-") and args.train not in (None, "-") and Path(p).is_file()}
        for flag, path in given.items():
            if Path(args.train).is_file() and path == Path(args.train).resolve():
                print(f"warning: {flag} is the --train file: its scores are on training data "
                      + ("(and the best epoch is chosen on it)" if flag == "--dev" else "(not a test)"),
                      file=sys.stderr)
        for flag, path in (("--train", args.train), ("--dev", args.dev), ("--test", args.test)):
            if path is not None and path != "-" and Path(path).is_dir():
                raise ConfigError(f"{flag} {path}: a folder, not a file (give the .jsonl, .json or .csv file)")
            if path is not None and path != "-" and not Path(path).is_file():
                raise ConfigError(f"{flag} {path}: file not found")


def _default_out(corpus_name: str, args: argparse.Namespace, arch: str, seed: int) -> Path:
    """``runs/<dataset or train-file stem>[-<arch>]-seed<N>.safetensors``: two corpora or two
    models never share a default name."""
    stem = corpus_name if args.dataset else Path(args.train).stem
    return Path("runs") / f"{stem}{'' if arch == 'iein' else '-' + arch}-seed{seed}.safetensors"


def cmd_train(args: argparse.Namespace) -> int:
    _check_train_args(args)
    from ..training.config import TrainConfig

    if args.epochs is not None or args.threads is not None:  # fail fast, before torch
        TrainConfig(**{k: v for k, v in (("max_epochs", args.epochs), ("threads", args.threads)) if v is not None})
    from ..evaluation.metrics import format_report
    from ..training.distributed import env_rank
    from ..training.experiment import encoder_advice, parse_overrides, resolve_experiment
    from ..training.pipeline import run_experiment
    from ..training.trainer import check_resume_state, check_stage1_data, prepare, side_files
    from ..atomic import atomic_write_json

    # Under torchrun every process runs this command; rank 0 alone prints and writes files.
    main_rank = env_rank() == 0

    def note(msg: str) -> None:
        if main_rank:
            print(msg, file=sys.stderr, flush=True)

    overrides = parse_overrides(args.set)
    encoder = args.encoder
    if args.encoder_from is not None:  # two-stage: the stage-1 model's encoder, frozen
        encoder, overrides = "frozen", {**overrides, "encoder.checkpoint": args.encoder_from}
    dataset = args.dataset or "generic"
    exp = resolve_experiment(dataset, args.preset, args.arch, encoder, overrides, seed=args.seed,
                             threads=args.threads, max_epochs=args.epochs, device=args.device)
    corpus = _load_corpus(args)
    if args.dev_fraction is not None:
        from ..data.registry import carve_dev

        corpus = carve_dev(corpus, args.dev_fraction, exp.train.seed)
    if args.encoder_from is not None:
        check_stage1_data(args.encoder_from, corpus)
    out = Path(args.out) if args.out else _default_out(corpus.name, args, exp.arch, exp.train.seed)
    if out.exists() and not (args.force or args.resume):
        raise ConfigError(f"{out} exists (a finished run); pass --force to replace it when this run ends, "
                          "or --out another path")
    check_resume_state(out, args.resume, args.force)
    if args.force and not args.resume and side_files(out)[1].is_file() and main_rank:
        side_files(out)[1].unlink()
        note(f"--force: removed the killed run's state {side_files(out)[1]}; training starts over")
    note(f"preset {exp.preset} ({exp.arch} on {exp.encoder}): {exp.description}")
    if not args.dataset and not args.preset:
        note("note: your own corpus gets preset 'generic'; --preset meld or --preset iemocap may suit it "
             "better (see `iein presets`)")
    advice = encoder_advice(exp)
    if advice:
        note(f"note: {advice}")
    try:
        done = run_experiment(exp, lambda enc, cfg: prepare(corpus, args.embeddings, enc, cfg, log=note),
                              dataset=corpus.name, out=out, force=args.force, resume=args.resume,
                              check_stage1=lambda path: check_stage1_data(path, corpus), log=note,
                              callbacks=args.callbacks)
    except IeinError:
        if main_rank:
            raise
        return 2  # the same error is rank 0's to print
    if not main_rank:
        return 0
    result, exp, data = done.result, done.experiment, done.data
    summary = result.summary()
    summary.update(experiment=exp.to_dict(), embeddings=data.provenance)
    atomic_write_json(out.with_suffix(".json"), summary)
    print(f"best epoch {result.best_epoch} of {result.epochs_run}; checkpoint {out}; results {out.with_suffix('.json')}")
    print("\n[dev]\n" + format_report(result.dev, corpus.labels))
    if result.test is not None:
        print("\n[test]\n" + format_report(result.test, corpus.labels))
    return 0


def model_names(given: list[str] | None) -> list[str]:
    """``--model`` given once or more (an ensemble); by default the best shipped model the
    installed extras can run, named on stderr (:func:`iein.shipped.default_model`)."""
    if given:
        return list(given)
    from ..shipped import default_model

    name, why = default_model()
    print(f"iein: {why}; --model chooses another", file=sys.stderr)
    return [name]


def single_model(given: list[str] | None, where: str) -> str:
    names = model_names(given)
    if len(names) > 1:
        raise ConfigError(f"{where} labels with one model; ensembles (--model given {len(names)} times) run "
                          "in this process (--backend local)")
    return names[0]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..data.registry import load_corpus

    own = {"train": args.train, "dev": args.dev, "test": args.test}
    if not args.dataset and not any(own.values()):
        raise ConfigError("give --dataset NAME, or the file to score with --train/--dev/--test")
    if not args.dataset and args.split not in [k for k, v in own.items() if v]:
        given = [k for k, v in own.items() if v]
        raise ConfigError(f"--split {args.split}: no --{args.split} file given (you gave --{given[0]} FILE; "
                          f"use --split {given[0]}, or pass --{args.split} FILE)")
    from ..checkpoint import load_checkpoint
    from ..data.generic import check_labels
    from ..encoders.onnx_runtime import runtime_for_device
    from ..evaluation.ensemble import check_members, score_members
    from ..evaluation.metrics import format_report
    from ..recognizer import resolve_model
    from ..atomic import atomic_write_json

    names = model_names(args.model)
    runtime = runtime_for_device(args.runtime, args.device)
    members = [load_checkpoint(resolve_model(n), runtime=runtime) for n in names]
    check_members([m.labels for m in members], [m.meta for m in members], names)
    loaded = members[0]
    for member in members:
        if args.device != "cpu":
            member.model.to(args.device)
    labels = tuple(x.strip() for x in args.labels.split(",")) if args.labels else loaded.labels
    if labels != tuple(loaded.labels):
        raise ConfigError(f"--labels {args.labels}: the model's labels are {', '.join(loaded.labels)} (in this "
                          "order), fixed by training; drop --labels or give exactly these")
    if args.dataset:
        corpus = load_corpus(args.dataset, args.data_dir)
    else:
        corpus = load_corpus("custom", labels=labels, **{k: v for k, v in own.items() if k == args.split})
    if args.split not in corpus.splits or not corpus.splits[args.split]:
        raise ConfigError(f"split {args.split!r} not available (have: {', '.join(k for k, v in corpus.splits.items() if v)})")
    convs = corpus.splits[args.split]
    check_labels(convs, loaded.labels, f"{corpus.name}/{args.split} vs checkpoint {names[0]}")
    exclude_label = loaded.meta.get("train_config", {}).get("exclude_label")
    result = score_members([(m.model, m.featurizer) for m in members], convs, loaded.labels,
                           exclude=(exclude_label,) if exclude_label else ())
    if len(names) > 1:
        result["ensemble"] = names
    result["model"] = " + ".join(names)
    result["dataset"] = corpus.name
    result["split"] = args.split
    print(format_report(result, loaded.labels))
    first = names[0]
    name = Path(first).name[: -len(".safetensors")] if first.endswith(".safetensors") else Path(first).name
    name += f"+{len(names) - 1}-more" if len(names) > 1 else ""
    stem = corpus.name if args.dataset else Path(own[args.split]).stem
    default_out = Path(first).with_name(f"{name}.eval-{stem}-{args.split}.json")
    if not Path(first).is_file():  # a shipped model: never write into the installed package
        default_out = Path("runs") / f"{name}.eval-{stem}-{args.split}.json"
    out = Path(args.json or default_out)
    atomic_write_json(out, result)
    print(f"scores written to {out}", file=sys.stderr)
    return 0


def cmd_export_encoder(args: argparse.Namespace) -> int:
    """Stage 1 -> stage 2 of the two-stage recipe: a fine-tuned transformer encoder as an HF folder."""
    from ..checkpoint import load_checkpoint
    from ..encoders.transformer import TransformerEncoder, export_pretrained
    from ..recognizer import resolve_model

    loaded = load_checkpoint(resolve_model(args.model))
    enc = loaded.model.utterance_encoder
    if not isinstance(enc, TransformerEncoder):
        raise ConfigError(f"{args.model}: its encoder is {enc.encoder_type}, not a transformer")
    out = export_pretrained(enc, args.dir)
    print(f"wrote {out}; train on its features with --encoder transformer --set encoder.model={out}")
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    """A trained model as a Hugging Face hub repository folder (checkpoint + model card)."""
    from ..sharing import export_model

    out = export_model(args.model, args.dir, args.repo_id)
    print(f"wrote {out}; share it with `hf upload {args.repo_id} {out}`, then load it anywhere with "
          f"--model {args.repo_id}")
    return 0


def _check_predict_args(args: argparse.Namespace) -> None:
    """``iein predict``'s flags and input path, before torch (imported by the recognizer,
    seconds) is loaded; errors name the flag or the file."""
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.input not in (None, "-") and not Path(args.input).exists():
        raise ConfigError(f"{args.input}: input file not found")
    if args.live:
        for flag, bad in (("--out", args.out is not None), ("--trace", args.trace), ("--format csv", args.format == "csv"),
                          ("--backend ray", args.backend == "ray"), ("a second --model", len(args.model or []) > 1)):
            if bad:
                raise ConfigError(f"--live answers each utterance on stdout as it arrives: it does not take {flag}")
    if args.input not in (None, "-") and Path(args.input).is_dir() and args.backend != "ray":
        raise ConfigError(f"{args.input}: a folder, not a file: give one .jsonl/.json/.csv file, or label every "
                          "file of the folder with --backend ray")


def cmd_predict(args: argparse.Namespace) -> int:
    """Stream conversations through a model: JSONL/CSV out, or a step-by-step trace table."""
    import contextlib
    import csv
    import os

    _check_predict_args(args)
    from tqdm.auto import tqdm

    from ..data.generic import MAX_UTTERANCES, iter_conversations, source_name
    from ..output_formats import csv_header, csv_rows, format_trace, jsonl_record
    from ..recognizer import MAX_UTTERANCE_CHARS, Recognizer
    from ..atomic import atomic_path
    from ..utils import torch_threads

    fmt = args.format or ("csv" if args.out and str(args.out).lower().endswith(".csv") else "jsonl")
    # A progress bar on a terminal's stderr, unless it would interleave with output on that terminal.
    progress = sys.stderr.isatty() and not (sys.stdout.isatty() and (args.trace or args.out is None))
    if args.backend == "ray":
        if args.trace:
            raise ConfigError("--trace prints conversations one at a time: use it without --backend ray")
        from ..batch_predict import predict_on_ray

        counts = predict_on_ray(args.input, args.out, single_model(args.model, "--backend ray"), fmt,
                                args.input_format, args.batch_size,
                                args.threads or 1, args.concurrency, args.address, device=args.device,
                                progress=progress)
        return _predict_summary(args, *counts)
    if args.address is not None or args.concurrency is not None:
        raise ConfigError("--address and --concurrency are Ray's: use them with --backend ray")
    rec = Recognizer.load(model_names(args.model), device=args.device, runtime=args.runtime)
    if args.live:
        return _predict_live(rec, args)
    convs = iter_conversations(args.input, args.input_format, max_utterance_chars=MAX_UTTERANCE_CHARS,
                               max_utterances=MAX_UTTERANCES)
    stdout_is_tty = sys.stdout.isatty()
    # The machine-readable output goes to --out, or to stdout unless --trace prints the table there.
    write_data = args.out is not None or not args.trace
    color = stdout_is_tty and not os.environ.get("NO_COLOR")
    n_convs = n_utts = n_empty = 0
    try:
        with contextlib.ExitStack() as stack:
            fh = None
            if write_data:
                if args.out is not None:
                    tmp = stack.enter_context(atomic_path(args.out))
                    fh = stack.enter_context(open(tmp, "w", encoding="utf-8", newline=""))
                else:
                    fh = sys.stdout
                    if (fh.encoding or "").lower().replace("-", "") != "utf8" and hasattr(fh, "reconfigure"):
                        fh.reconfigure(encoding="utf-8")
            writer = None
            if fh is not None and fmt == "csv":
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(csv_header(rec.steps))
            bar = stack.enter_context(tqdm(unit="utt", desc="predict", file=sys.stderr, disable=not progress))
            with torch_threads(args.threads):
                for pred in rec.iter_predictions(convs, args.batch_size, source=source_name(args.input)):
                    if writer is not None:
                        writer.writerows(csv_rows(pred))
                    elif fh is not None:
                        fh.write(json.dumps(jsonl_record(pred), ensure_ascii=False) + "\n")
                    if args.trace:
                        print(format_trace(pred, color=color, width=args.trace_width) + "\n")
                    n_convs += 1
                    n_utts += len(pred.conversation)
                    n_empty += sum(not u.text for u in pred.conversation.utterances)
                    bar.update(len(pred.conversation))
            if fh is not None and fh is not sys.stdout:
                fh.flush()
        sys.stdout.flush()
    except BrokenPipeError:  # `iein predict ... | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return _predict_summary(args, n_convs, n_utts, n_empty)


def _predict_live(rec: Any, args: argparse.Namespace) -> int:
    """``iein predict --live``: label each line of the input as soon as it is read, one JSON
    line out per utterance (flushed); a bad line is reported on stderr and skipped."""
    import os

    from ..output_formats import OUTPUT_DIGITS, add_notes
    from ..stream import live_predictions
    from ..utils import torch_threads

    rec.stream()  # refuses a model that cannot stream before any input is read
    errors = 0

    def on_error(message: str) -> None:
        nonlocal errors
        errors += 1
        print(f"error: {message}", file=sys.stderr, flush=True)

    source = sys.stdin if args.input in (None, "-") else open(args.input, encoding="utf-8")
    try:
        with torch_threads(args.threads), source:
            for out in live_predictions(rec.stream, iter(source.readline, ""), OUTPUT_DIGITS, on_error):
                sys.stdout.write(json.dumps(add_notes([out])[0], ensure_ascii=False) + "\n")
                sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1 if errors else 0


def _predict_summary(args: argparse.Namespace, n_convs: int, n_utts: int, n_empty: int) -> int:
    """The closing lines of ``iein predict`` on stderr, whichever backend labelled."""
    from ..data.generic import source_name
    from ..utils import plural

    if n_convs == 0:
        print(f"note: no conversations in {source_name(args.input)}", file=sys.stderr)
    elif args.out is not None:
        print(f"{plural(n_convs, 'conversation')}, {plural(n_utts, 'utterance')} -> {args.out}", file=sys.stderr)
    if n_empty:  # the same note as on each such utterance of the JSONL/CSV output
        print(f"note: {plural(n_empty, 'utterance')} with empty text, labelled from context only",
              file=sys.stderr)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_cmd == "download":
        from ..data.download import download

        from ..data.registry import download_dir

        dest = Path(args.dest) if args.dest else download_dir(args.name)
        download(args.name, dest, base_url=args.base_url)
        print(f"{args.name}: files verified in {dest}")
        return 0
    from ..utils import plural

    def column(n: int, noun: str, digits: int) -> str:  # "   1 dialogue " lines up with "  12 dialogues"
        number, word = plural(n, noun).split(" ", 1)
        return f"{number:>{digits}s} {word:<{len(noun) + 1}s}"

    corpus = _load_corpus(args)
    print(f"{corpus.name}: labels {', '.join(corpus.labels)}")
    for split in corpus.splits:
        n_dlg, n_utt = corpus.stats(split)
        counts = ", ".join(f"{k} {v}" for k, v in corpus.label_counts(split).most_common())
        print(f"  {split:5s} {column(n_dlg, 'dialogue', 6)} {column(n_utt, 'utterance', 7)} | {counts}")
        for note in corpus.notes.get(split, []):
            print(f"    note: {note}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from ..encoders.registry import ENCODERS
    from ..models.registry import MODELS
    from ..training.config import PRESETS

    print("models (--arch):")
    for name, cls in MODELS.items():
        print(f"  {name:14s} {cls.reference}")
    print("encoders (--encoder):")
    for name, cls in ENCODERS.items():
        print(f"  {name:14s} {(cls.__doc__ or '').strip().splitlines()[0] if cls.__doc__ else ''}")
    print("presets (--preset):")
    for name, p in PRESETS.items():
        print(f"  {name:22s} {p.arch} on {p.encoder}: {p.description}")
        for what, d in (("model", p.model), ("encoder", p.encoder_config), ("train", p.train)):
            if d:
                print(f"  {'':22s} {what} {d}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from ..server import Limits, serve
        from ..server.live import StreamLimits
    except ImportError as exc:
        raise ConfigError(f"iein serve needs the 'serve' extra: pip install 'iein[serve]' ({exc})") from None

    given = dict(max_body_bytes=args.max_body_bytes, max_utterances=args.max_utterances,
                 max_utterance_chars=args.max_utterance_chars)
    limits = Limits(**{k: v for k, v in given.items() if v is not None})
    live = dict(max_sessions=args.max_sessions, idle_seconds=args.idle_seconds)
    stream_limits = StreamLimits(**{k: v for k, v in live.items() if v is not None})
    serve(model_names(args.model), host=args.host, port=args.port, limits=limits, threads=args.threads,
          access_log=args.access_log, device=args.device, stream_limits=stream_limits, runtime=args.runtime)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ..utils import plural
    from ..reproduce.report import render_report
    from ..reproduce.runner import reproduce

    summary = reproduce(
        args.out, args.dataset, seeds_main=args.seeds_main, seeds_ablation=args.seeds_ablation,
        seeds_baselines=args.seeds_baselines, quick=args.quick, workers=args.workers,
        threads_per_worker=args.threads_per_worker, data_root=args.data_root, embeddings=args.embeddings,
        max_runs=args.max_runs, only=args.only, encoder=args.encoder, overrides=args.set,
        estimate_only=args.estimate_only, backend=args.backend, address=args.address,
    )
    if args.estimate_only:
        print(summary["estimate"].line())
        return 0
    path = render_report(args.out)
    print(f"{plural(len(summary['run']), 'run')} done now, {summary['skipped']} before, {summary['remaining']} "
          f"remaining, {len(summary['failed'])} failed; report {path}")
    return 1 if summary["failed"] else 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..reproduce.report import render_report

    if not (Path(args.dir) / "runs.jsonl").is_file():
        raise ConfigError(f"{args.dir}: no runs.jsonl (run `iein reproduce --out {args.dir}` first)")
    print(f"wrote {render_report(args.dir)}")
    return 0

