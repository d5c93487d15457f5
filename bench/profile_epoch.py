"""Where one training epoch's time goes (a profile, not a test).

    python bench/profile_epoch.py --dataset meld --batches 40 --threads 1 --data-root ../shared/data

Trains ``--batches`` mini-batches of the dataset's preset model (same experiment
resolution, model construction, batching, loss, optimiser and clipping as ``iein train``;
no class weights) and splits the wall time into: utterance-encoder forward, the context
model's forward (for IEIN the initial classifier + T EC-Encoder passes), loss, backward,
optimiser step, and one dev evaluation, scaled to a whole epoch.  Backward is split between
the utterance encoder and the rest by timing, on the same batches, forward+backward of the
utterance encoder alone.  ``torch.profiler``'s top operators by self CPU time are printed
as well.  ``--arch``/``--encoder``/``--set`` profile any other model as in ``iein train``.

Writes ``<out>/profile_<dataset>[-<arch>].json`` and prints a Markdown table for docs/results.md.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from iein.atomic import atomic_write_json
from iein.data.registry import load_corpus
from iein.evaluation.evaluate import evaluate_model
from iein.data.batching import iter_batches
from iein.training.experiment import parse_overrides, resolve_experiment
from iein.training.trainer import build_for, build_optimizer, prepare
from iein.utils import set_seed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="meld")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=None, help="IEIN's T (default: the preset's)")
    ap.add_argument("--arch", help="context model (default: the dataset preset's)")
    ap.add_argument("--encoder", help="utterance encoder (default: the preset's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a model/encoder/training setting, as in `iein train`")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    overrides = parse_overrides(args.set)
    if args.iterations is not None:
        overrides["model.iterations"] = args.iterations
    exp = resolve_experiment(args.dataset, arch=args.arch, encoder=args.encoder, overrides=overrides,
                             threads=args.threads)
    tcfg = exp.train
    data = prepare(load_corpus(args.dataset, Path(args.data_root) / args.dataset), None, exp.encoder,
                   exp.encoder_config, log=lambda _m: None)
    batch_size = tcfg.batch_size
    set_seed(0)
    model = build_for(data, exp)  # the trainer's model: GloVe rows copied in, labels from the data
    optim = build_optimizer(model, tcfg)  # the trainer's parameter groups and weight decay
    params = [p for g in optim.param_groups for p in g["params"]]  # what the trainer clips
    train_set = data.splits["train"]
    n_epoch_batches = -(-len(train_set) // batch_size)
    batches = list(iter_batches(train_set, batch_size, model.utterance_encoder.collate, shuffle=True,
                                rng=np.random.default_rng(0)))[: args.batches]

    def step(batch) -> dict[str, float]:
        # model(batch) is exactly context(utterance_vectors(batch)) then loss: timed part by part
        t0 = time.perf_counter()
        u = model.utterance_vectors(batch)
        tu = time.perf_counter()
        steps = model.context(u, batch)
        t1 = time.perf_counter()
        loss, _ = model.loss(steps, batch, None)
        t2 = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        if tcfg.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, tcfg.clip_norm)
        optim.step()
        t4 = time.perf_counter()
        return {"utterance encoder forward": tu - t0, "context model forward": t1 - tu,
                "loss": t2 - t1, "backward": t3 - t2, "optimiser step": t4 - t3}

    model.train()
    step(batches[0])  # warm-up
    parts: dict[str, float] = defaultdict(float)
    for b in batches:
        for k, v in step(b).items():
            parts[k] += v

    # backward split: forward+backward of the utterance encoder alone, same batches
    t_utt = 0.0
    trains_encoder = any(p.requires_grad for p in model.utterance_encoder.parameters())
    for b in batches if trains_encoder else ():  # a frozen encoder (cached vectors) has no backward
        t0 = time.perf_counter()
        u = model.utterance_encoder(b.inputs)
        optim.zero_grad(set_to_none=True)
        u.sum().backward()
        t_utt += time.perf_counter() - t0
    utt_backward = max(0.0, t_utt - parts["utterance encoder forward"]) if trains_encoder else 0.0

    model.eval()
    # a first, untimed call: it imports scikit-learn (about a second), which a training run
    # pays once, not every epoch
    evaluate_model(model, data.splits["dev"][:1], data.labels, (), 64)
    t0 = time.perf_counter()
    evaluate_model(model, data.splits["dev"], data.labels, (), 64)
    dev_eval = time.perf_counter() - t0

    scale = n_epoch_batches / len(batches)
    epoch = {k: v * scale for k, v in parts.items()}
    epoch["backward: utterance encoder (est.)"] = min(utt_backward * scale, epoch["backward"])
    epoch["backward: context model + rest (est.)"] = epoch["backward"] - epoch["backward: utterance encoder (est.)"]
    epoch["dev evaluation"] = dev_eval
    total = sum(v for k, v in epoch.items() if not k.startswith("backward:"))

    model.train()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for b in batches[:10]:
            step(b)
    top = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)

    iterations = getattr(model.config, "iterations", None)  # IEIN's T
    t_text = f", T={iterations}" if iterations is not None else ""
    print(f"{args.dataset}: {exp.arch} on {exp.encoder}{t_text}, batch {batch_size} dialogues, {args.threads} thread(s), "
          f"{len(batches)} of {n_epoch_batches} batches timed, scaled to one epoch\n")
    print("| part | s/epoch | share |\n| --- | ---: | ---: |")
    for k, v in epoch.items():
        share = "" if k.startswith("backward:") else f"{100 * v / total:.0f}%"
        print(f"| {k} | {v:.2f} | {share} |")
    print(f"| **total** | {total:.2f} | 100% |\n")
    print(top)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.dataset if exp.arch == "iein" else f"{args.dataset}-{exp.arch}"
    atomic_write_json(out / f"profile_{stem}.json", {
        "dataset": args.dataset, "arch": exp.arch, "encoder": exp.encoder, "preset": exp.preset,
        "model": exp.model, "encoder_config": exp.encoder_config,
        "iterations": iterations,
        "batch_size": batch_size, "threads": args.threads,
        "batches_timed": len(batches), "batches_per_epoch": n_epoch_batches, "seconds_per_epoch": epoch,
        "total_seconds_per_epoch": total, "torch": torch.__version__, "top_ops": top,
    })


if __name__ == "__main__":
    main()
