#!/usr/bin/env python3
"""Choose among candidate ensembles on dev, then score the dev winner alone on test.

Each candidate is a named set of checkpoints (any mix of encoders and context models for one
dataset); its members' probabilities are averaged per step, as ``iein evaluate --model A --model
B`` does.  Every member predicts dev once, so many candidates sharing members cost little more
than one.  Test is read for the winner only: the other candidates' test scores are never
computed, so the choice cannot lean on them.

    python scripts/choose_ensemble.py --dataset meld \\
        --candidate "mpnet=runs/meld-mpnet-l4-proj128-seed[0-4].safetensors" \\
        --candidate "ctx=runs/meld-minilm-ctx*-proj128-seed[0-2].safetensors" \\
        --candidate "both=mpnet+ctx" --out runs/ensembles-meld.json

A candidate is ``NAME=GLOB[,GLOB...]`` or ``NAME=OTHER+OTHER`` (the union of earlier candidates).
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path


def parse_candidates(specs: list[str]) -> dict[str, list[str]]:
    """``NAME=GLOB,...`` / ``NAME=A+B`` -> each name's sorted, distinct checkpoint paths."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        name, _, value = spec.partition("=")
        if not name or not value:
            sys.exit(f"--candidate {spec!r}: expected NAME=GLOB[,GLOB...] or NAME=A+B")
        if "+" in value and all(part in out for part in value.split("+")):
            paths = [p for part in value.split("+") for p in out[part]]
        else:
            paths = [p for pattern in value.split(",") for p in sorted(glob.glob(pattern))]
        if not paths:
            sys.exit(f"--candidate {name}: no checkpoint matches {value!r}")
        out[name] = sorted(set(paths))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data-dir")
    ap.add_argument("--candidate", action="append", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import torch

    from iein.checkpoint import load_checkpoint
    from iein.data.registry import load_corpus
    from iein.evaluation.ensemble import average_predictions, check_members, member_predictions
    from iein.evaluation.evaluate import evaluate_model, selection_metric

    torch.set_num_threads(args.threads)
    candidates = parse_candidates(args.candidate)
    paths = sorted({p for members in candidates.values() for p in members})
    loaded = {p: load_checkpoint(p) for p in paths}
    for members in candidates.values():
        check_members([loaded[p].labels for p in members], [loaded[p].meta for p in members], members)
    corpus = load_corpus(args.dataset, args.data_dir)
    first = loaded[paths[0]]
    labels = first.labels
    exclude_label = first.meta.get("train_config", {}).get("exclude_label")
    exclude = (exclude_label,) if exclude_label else ()

    def score(members: list[str], split: str, cache: dict) -> dict:
        for p in members:
            if p not in cache:
                cache[p] = member_predictions(loaded[p].model, loaded[p].featurizer, corpus[split], labels)
        preds = [cache[p][1] for p in members]
        averaged = preds[0] if len(preds) == 1 else average_predictions(preds)
        return evaluate_model(first.model, cache[members[0]][0], labels, exclude=exclude, preds=averaged)

    dev_cache: dict = {}
    dev = {name: score(members, "dev", dev_cache) for name, members in candidates.items()}
    metric = selection_metric(next(iter(dev.values())))[0]
    for name, scores in dev.items():
        print(f"dev  {name:24s} {len(candidates[name]):3d} members  {metric} {selection_metric(scores)[1]:.2f}")
    winner = max(dev, key=lambda n: selection_metric(dev[n])[1])
    test = score(candidates[winner], "test", {})
    print(f"test {winner:24s} {len(candidates[winner]):3d} members  {metric} {selection_metric(test)[1]:.2f} "
          f"(weighted F1 {test['final']['weighted_f1']:.2f})")
    if args.out:
        record = {"dataset": args.dataset, "metric": metric, "candidates": candidates,
                  "dev": {n: selection_metric(s)[1] for n, s in dev.items()}, "winner": winner,
                  "test": test["final"]}
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
