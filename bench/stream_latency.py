"""Latency of a live session: the time to label one new utterance, at conversation lengths
10, 100 and 1,000 (a benchmark, not a test).

    python bench/stream_latency.py --model runs/live/meld-live-seed0.safetensors --threads 1

For each model, ``--sessions`` live sessions (:meth:`iein.recognizer.Recognizer.stream`)
each add ``max(--lengths)`` real MELD test utterances (cycled, their own speakers) one at a
time; the latency of every ``add`` is recorded, and p50/p99 are reported over the adds at
positions L-9 ... L of every session, for each L.  Beside it, what a service without a live
mode pays: ``Recognizer.predict`` on the whole prefix of length L for each new utterance
(``--recompute`` samples per L).  Targets (issue 26): flat in L; p99 < 10 ms (GloVe) and
< 40 ms (MiniLM) at 1 thread on the 2-core development machine.

Writes ``bench/results/stream_latency.json`` and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from iein.atomic import atomic_write_json
from iein.data.registry import load_corpus
from iein.recognizer import Recognizer


def turns(data_root: str, n: int) -> list[tuple[str, str]]:
    """``n`` real utterances (speaker, text) from MELD's test split, cycled."""
    corpus = load_corpus("meld", Path(data_root) / "meld")
    pool = [(u.speaker, u.text) for conv in corpus["test"] for u in conv.utterances]
    return [pool[i % len(pool)] for i in range(n)]


def session_latencies(rec: Recognizer, talk: list[tuple[str, str]], sessions: int) -> np.ndarray:
    """``(sessions, len(talk))`` seconds per ``add``."""
    out = np.zeros((sessions, len(talk)))
    for s in range(sessions):
        session = rec.stream(max_utterances=len(talk))
        for i, (speaker, text) in enumerate(talk):
            t0 = time.perf_counter()
            session.add(speaker, text)
            out[s, i] = time.perf_counter() - t0
    return out


def recompute_latency(rec: Recognizer, talk: list[tuple[str, str]], length: int, samples: int) -> list[float]:
    """Seconds to label utterance ``length`` by predicting its whole prefix again."""
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        rec.predict(talk[:length])
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="a causal checkpoint (repeatable)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--recompute", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--out", default="bench/results/stream_latency.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    talk = turns(args.data_root, max(args.lengths))
    results, rows = [], []
    for name in args.model:
        rec = Recognizer.load(name)
        rec.stream().add(*talk[0])  # warm-up: first-call allocations, lazy imports
        lat = session_latencies(rec, talk, args.sessions)
        for length in args.lengths:
            window = lat[:, max(0, length - 10):length].ravel() * 1e3
            full = np.asarray(recompute_latency(rec, talk, length, args.recompute)) * 1e3
            res = {"model": name, "encoder": rec.model.utterance_encoder.encoder_type, "length": length,
                   "p50_ms": float(np.percentile(window, 50)), "p99_ms": float(np.percentile(window, 99)),
                   "samples": int(window.size), "recompute_p50_ms": float(np.median(full))}
            results.append(res)
            rows.append(f"| {Path(name).name} | {length} | {res['p50_ms']:.2f} | {res['p99_ms']:.2f} | "
                        f"{res['recompute_p50_ms']:.1f} |")
    atomic_write_json(args.out, {"threads": args.threads, "sessions": args.sessions, "results": results})
    print("| model | conversation length | p50 ms / new utterance | p99 ms | whole-prefix predict, p50 ms |")
    print("|---|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
