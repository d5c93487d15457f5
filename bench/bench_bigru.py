"""Training speed of the utterance encoder's BiGRU (a benchmark, not a test).

    python bench/bench_bigru.py [--threads 1] [--repeats 5]
    python bench/bench_bigru.py --real ../shared/data/meld [--batches 40] [--threads 1]

Without ``--real``: a MELD-like synthetic batch (330 utterances, up to 40 words, 50-d
inputs, hidden 100), packed ``nn.GRU`` against iein's BiGRU, forward + backward, side by
side in one process.

With ``--real``: the ``meld`` preset's utterance encoder (GloVe + BiGRU + attention) on the
first ``--batches`` real training batches, forward + backward: the packed scan with its
hand-written backward (``iein.layers.BiRNN.gru_scan``, the default on CPU) against ``nn.GRU`` over
length groups for several values of ``iein.layers.STEP_COST`` ("one group" is a single padded
block), interleaved over ``--repeats`` rounds; the minimum per setting is printed.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from iein import layers
from iein.layers import BiGRU


def synthetic(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    batch, width, dim, hidden = 330, 40, 50, 100
    lengths = torch.clamp((torch.randn(batch).abs() * 8 + 3).long(), 1, width)
    x = torch.randn(batch, width, dim, requires_grad=True)
    packed_gru = torch.nn.GRU(dim, hidden, batch_first=True, bidirectional=True)
    ours = BiGRU(dim, hidden)

    def packed() -> torch.Tensor:
        p = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(packed_gru(p)[0], batch_first=True, total_length=width)[0]

    results = {}
    for name, fn in (("packed nn.GRU", packed), ("iein BiGRU", lambda: ours(x, lengths))):
        fn().sum().backward()  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            fn().sum().backward()
        results[name] = (time.perf_counter() - t0) / args.repeats
    for name, sec in results.items():
        print(f"{name:14s} forward+backward {sec * 1000:7.1f} ms")
    print(f"speed-up {results['packed nn.GRU'] / results['iein BiGRU']:.2f}x ({args.threads} thread(s))")


def real(args: argparse.Namespace) -> None:
    import numpy as np

    from iein.data.batching import iter_batches
    from iein.data.registry import load_corpus
    from iein.training.experiment import resolve_experiment
    from iein.training.trainer import build_for, prepare
    from iein.utils import set_seed

    data_dir = Path(args.real)
    exp = resolve_experiment(data_dir.name, threads=args.threads)
    data = prepare(load_corpus(data_dir.name, data_dir), None, exp.encoder, exp.encoder_config, log=lambda _m: None)
    set_seed(0)
    encoder = build_for(data, exp).utterance_encoder.train()
    batches = list(iter_batches(data.splits["train"], exp.train.batch_size, encoder.collate, shuffle=True,
                                rng=np.random.default_rng(0)))[: args.batches]
    # name -> (scan, STEP_COST)
    settings = {"scan": (True, layers.STEP_COST), "one group": (False, 10**9),
                **{f"groups {c}": (False, c) for c in (8, 16, 32)}}
    default = (layers.BiRNN.gru_scan, layers.STEP_COST)
    default_name = "scan" if layers.BiRNN.gru_scan else f"groups {layers.STEP_COST}"
    times: dict[str, list[float]] = {k: [] for k in settings}
    for _ in range(args.repeats):
        for name, (scan, cost) in settings.items():
            layers.STEP_COST = cost
            layers.use_gru_scan(encoder, scan)
            t0 = time.perf_counter()
            for b in batches:
                encoder(b.inputs).sum().backward()
            times[name].append(time.perf_counter() - t0)
            encoder.zero_grad(set_to_none=True)
    layers.STEP_COST = default[1]
    layers.use_gru_scan(encoder, default[0])
    base = min(times["one group"])
    print(f"{data_dir.name}, {len(batches)} training batches of {exp.train.batch_size} dialogues, "
          f"{args.threads} thread(s), forward + backward of the utterance encoder (min of {args.repeats}):")
    for name, t in times.items():
        mark = " (default)" if name == default_name else ""
        print(f"  {name:10s} {min(t):6.2f} s  {base / min(t):.2f}x{mark}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--real", metavar="DATA_DIR", help="a dataset folder, e.g. ../shared/data/meld")
    ap.add_argument("--batches", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    (real if args.real else synthetic)(args)


if __name__ == "__main__":
    main()
