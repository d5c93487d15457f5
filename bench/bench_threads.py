"""Thread settings under load (issue 12, part 1): a benchmark, not a test.

    python bench/bench_threads.py --batches 15 --busy 0 2 --data-root ../shared/data

Times the same ``--batches`` MELD training mini-batches (the default preset's IEIN, same
seed, same data) in a fresh subprocess for each thread setting, first on a machine with
nothing else of ours running (``--busy 0``), then with N CPU-bound Python processes
running beside it (``--busy 2``), one setting after the other in one run, so the ratios
compare like with like.  Settings:

* ``1``            torch.set_num_threads(1)
* ``2``            torch.set_num_threads(2), OpenMP's default wait policy (spin, then sleep)
* ``2-passive``    2 threads with ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep at once)
* ``auto``         what ``iein`` does by default (``iein.utils.default_threads`` + ``THREAD_ENV``)

Prints a Markdown table of seconds per setting and load, and the ratio of each setting to
``1`` under the same load; ``--json`` writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import os, sys, time, json
setting, batches, data_root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
import torch
from iein.utils import default_threads
if setting == "auto":
    torch.set_num_threads(default_threads())
else:
    torch.set_num_threads(int(setting.split("-")[0]))
from iein.data.registry import load_corpus
from iein.data.batching import iter_batches
from iein.training.experiment import resolve_experiment
from iein.training.trainer import build_for, build_optimizer, prepare
from iein.utils import set_seed
import numpy as np
exp = resolve_experiment("meld", threads=torch.get_num_threads())
data = prepare(load_corpus("meld", os.path.join(data_root, "meld")), log=lambda m: None)
set_seed(0)
model = build_for(data, exp).train()
optim = build_optimizer(model, exp.train)
batches = list(iter_batches(data.splits["train"], exp.train.batch_size, model.utterance_encoder.collate,
                            shuffle=True, rng=np.random.default_rng(0)))[:batches]
def step(b):
    out = model(b)
    optim.zero_grad(); out.loss.backward(); optim.step()
step(batches[0])  # warm-up
t = time.perf_counter()
for b in batches:
    step(b)
print(json.dumps({"seconds": time.perf_counter() - t, "threads": torch.get_num_threads()}))
"""


def _busy() -> None:  # a CPU-bound neighbour
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF


def run(setting: str, batches: int, data_root: str) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("OMP_NUM_THREADS", None)
    if setting.endswith("-passive"):
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if setting == "auto":  # what the iein CLI sets before importing torch
        from iein.utils import THREAD_ENV

        env.update(THREAD_ENV)
    out = subprocess.run([sys.executable, "-c", CHILD, setting, str(batches), data_root], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=15)
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--settings", nargs="+", default=["1", "2", "2-passive", "auto"])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--json")
    args = ap.parse_args()
    results: dict[int, dict[str, dict]] = {}
    for n_busy in args.busy:
        procs = [mp.Process(target=_busy, daemon=True) for _ in range(n_busy)]
        for p in procs:
            p.start()
        time.sleep(1.0 if procs else 0.0)
        try:
            results[n_busy] = {s: run(s, args.batches, args.data_root) for s in args.settings}
        finally:
            for p in procs:
                p.terminate()
        print(f"busy {n_busy}: " + ", ".join(f"{s} {r['seconds']:.1f}s" for s, r in results[n_busy].items()),
              file=sys.stderr, flush=True)
    print(f"| setting | {' | '.join(f'{n} busy: s (x of 1 thread)' for n in results)} |")
    print(f"|---|{'---:|' * len(results)}")
    for s in args.settings:
        cells = [f"{r[s]['seconds']:.1f} ({r[s]['seconds'] / r['1']['seconds']:.2f}x)" if "1" in r else
                 f"{r[s]['seconds']:.1f}" for r in results.values()]
        print(f"| {s} (threads {next(iter(results.values()))[s]['threads']}) | {' | '.join(cells)} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
