"""Training speed of the utterance encoder's BiGRU: packed nn.GRU vs iein's BiGRU.

    python bench/bench_bigru.py [--threads 1] [--repeats 5]

A MELD-like batch (330 utterances, up to 40 words, 50-d inputs, hidden 100); forward +
backward, side by side in one process.  Not a test.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from iein.layers import BiGRU


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
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


if __name__ == "__main__":
    main()
