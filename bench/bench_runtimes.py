#!/usr/bin/env python3
"""Transformer models on PyTorch against ONNX Runtime, side by side: start-up, throughput, labels.

For each model and runtime (``--runtimes``, the first the reference), interleaved (torch, onnxruntime, torch, ...) so that a change of load
on the machine hits both alike:

* **start-up**: a fresh interpreter's ``import torch`` + ``Recognizer.load`` + first prediction of one
  MELD dialogue (the ONNX export is made once before timing: its cost is reported separately);
* **throughput**: ``Recognizer.predict_many`` over MELD test dialogues in process, utterances/s;
* **agreement**: labels and largest probability difference against the torch path on the same
  dialogues, and the dev weighted-F1 of both when ``--dev`` is given.

    python bench/bench_runtimes.py --models meld-minilm --threads 2 --repeats 3 \\
        --out bench/results/runtimes.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

COLD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
from iein.recognizer import Recognizer
rec = Recognizer.load({model!r}, runtime={runtime!r})
t1 = time.perf_counter()
rec.predict(json.loads({conv!r}))
t2 = time.perf_counter()
print(json.dumps({{"load": t1 - t0, "total": t2 - t0, "transformers": "transformers" in sys.modules}}))
"""
RUNTIMES = ("torch", "onnxruntime")  # the default of --runtimes; torch is the reference


def cold_start(model: str, runtime: str, threads: int, conv: list[dict]) -> dict:
    code = COLD.format(threads=threads, model=model, runtime=runtime, conv=json.dumps(conv))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def throughput(rec, dialogues: list[list[dict]]) -> tuple[float, list[list[dict]]]:
    t0 = time.perf_counter()
    preds = list(rec.predict_many(dialogues, batch_size=32))
    return sum(map(len, preds)) / (time.perf_counter() - t0), preds


def dev_wf1(rec, convs) -> float:
    from iein.evaluation.metrics import classification_scores

    index = {name: i for i, name in enumerate(rec.labels)}
    gold, pred = [], []
    for conv, p in zip(convs, rec.predict_many(convs, batch_size=32)):
        gold += [index[u.label] for u in conv.utterances]
        pred += [index[x["label"]] for x in p]
    return classification_scores(gold, pred, rec.labels)["weighted_f1"]


def bench_model(model: str, args: argparse.Namespace, dialogues: list[list[dict]], dev) -> dict:
    import torch

    from iein.recognizer import Recognizer

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    runtimes = args.runtimes
    for r in runtimes[1:]:
        Recognizer.load(model, runtime=r).predict(dialogues[0])  # the one-off export, if not cached
    export_s = time.perf_counter() - t0
    cold: dict[str, list[dict]] = {r: [] for r in runtimes}
    speed: dict[str, list[float]] = {r: [] for r in runtimes}
    recs = {r: Recognizer.load(model, runtime=r) for r in runtimes}
    preds: dict[str, list] = {}
    for _ in range(args.repeats):
        for r in runtimes:
            cold[r].append(cold_start(model, r, args.threads, dialogues[0]))
            rate, preds[r] = throughput(recs[r], dialogues)
            speed[r].append(rate)
    a = [p for d in preds[runtimes[0]] for p in d]
    out: dict = {"model": model, "threads": args.threads, "utterances": len(a), "first_export_or_load_s": export_s}
    for r in runtimes:
        b = [p for d in preds[r] for p in d]
        out[r] = {"labels_differ": sum(x["label"] != y["label"] for x, y in zip(a, b)),
                  "max_prob_diff": max(abs(x["probs"][k] - y["probs"][k]) for x, y in zip(a, b) for k in x["probs"])}
    for r in runtimes:
        out[r] |= {"startup_s": statistics.median(c["total"] for c in cold[r]),
                  "import_load_s": statistics.median(c["load"] for c in cold[r]),
                  "imports_transformers": any(c["transformers"] for c in cold[r]),
                  "utt_per_s": statistics.median(speed[r]), "all_startup_s": [c["total"] for c in cold[r]],
                  "all_utt_per_s": speed[r]}
        if dev is not None:
            out[r]["dev_weighted_f1"] = dev_wf1(recs[r], dev)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["meld-minilm"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dialogues", type=int, default=200, help="MELD test dialogues for throughput")
    ap.add_argument("--dev", action="store_true", help="also score MELD dev with every runtime")
    ap.add_argument("--runtimes", nargs="+", default=list(RUNTIMES),
                    help="runtimes to compare, the first the reference (default: torch onnxruntime)")
    ap.add_argument("--data-dir", default="../shared/data/meld")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from iein.data.registry import load_corpus

    corpus = load_corpus("meld", args.data_dir)
    dialogues = [[{"speaker": u.speaker, "text": u.text} for u in c.utterances]
                 for c in corpus["test"][: args.dialogues]]
    results = [bench_model(m, args, dialogues, corpus["dev"] if args.dev else None) for m in args.models]
    for res in results:
        print(f"{res['model']}, {args.threads} threads, {res['utterances']} utterances")
        for r in args.runtimes:
            row = res[r]
            dev = f", dev w-F1 {row['dev_weighted_f1']:.2f}" if "dev_weighted_f1" in row else ""
            print(f"  {r:16s} start-up {row['startup_s']:.2f} s (import + load {row['import_load_s']:.2f}), "
                  f"{row['utt_per_s']:.0f} utt/s{dev}; labels differing from {args.runtimes[0]}: "
                  f"{row['labels_differ']}, max prob diff {row['max_prob_diff']:.1e}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
