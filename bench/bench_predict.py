"""Benchmark of ``iein predict`` (issue 4 targets): throughput, cold start, streaming memory.

    python bench/bench_predict.py --model meld                       # the full run
    python bench/bench_predict.py --model ckpt.safetensors --n-utterances 20000 --throughput-utterances 5000

Measures, each in a fresh subprocess so nothing is warm:

* **cold start**: ``import iein`` + ``Recognizer.load`` + the first ``predict`` of one
  MELD dialogue, timed inside the process (target < 3 s), and the wall time of a whole
  ``iein predict`` run on that one dialogue (adds interpreter start and CLI parsing);
* **throughput**: ``iein predict`` (JSONL in, JSONL out to a file) on MELD-like dialogues,
  the MELD test split repeated with fresh ids; utterances/s end to end, and with the
  one-dialogue run's wall time subtracted (steady state; target >= 3,000 utt/s);
* **streaming memory**: peak RSS of ``iein predict`` on a generated file of
  ``--n-utterances`` (default 1,000,000) utterances, output to /dev/null (target < 1 GB).
  The file is written to a temporary folder and removed afterwards.

Also reports in-process ``Recognizer.predict_many`` throughput (no file I/O, no JSON).
Not a test: numbers depend on the machine and on ``--threads``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLD = r"""
import sys, time, json
t0 = time.perf_counter()
import torch
if {threads} is not None:
    torch.set_num_threads({threads})
from iein.recognizer import Recognizer
rec = Recognizer.load({model!r}, runtime={runtime!r})
t1 = time.perf_counter()
rec.predict(json.loads({conv!r}))
t2 = time.perf_counter()
print(json.dumps({{"load": t1 - t0, "total": t2 - t0}}))
"""


def meld_dialogues(data_dir: str | None) -> list[list[dict]]:
    from iein.data.registry import load_corpus

    corpus = load_corpus("meld", data_dir)
    return [[{"speaker": u.speaker, "text": u.text} for u in c.utterances] for c in corpus["test"]]


def write_jsonl(path: Path, dialogues: list[list[dict]], n_utterances: int) -> tuple[int, int]:
    """MELD-like dialogues cycled until ``n_utterances``; streamed to disk. (dialogues, utts)"""
    n_dlg = n_utt = 0
    with open(path, "w", encoding="utf-8") as f:
        for utts in itertools.cycle(dialogues):
            if n_utt >= n_utterances:
                break
            utts = utts[: n_utterances - n_utt]
            f.write(json.dumps({"id": f"d{n_dlg}", "utterances": utts}, ensure_ascii=False) + "\n")
            n_dlg += 1
            n_utt += len(utts)
    return n_dlg, n_utt


def run(cmd: list[str], stdout=subprocess.DEVNULL) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB of the child, stderr) of one subprocess."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True)
    # read stderr in the parent while waiting, so a chatty child cannot block on a full pipe
    err = proc.stderr.read() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    rss = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return wall, rss, err


def cli(model: str, src: Path, threads: int | None, batch_size: int, out: str | None,
        runtime: str = "auto") -> list[str]:
    cmd = [sys.executable, "-m", "iein.cli", "predict", "--model", model, str(src), "--batch-size", str(batch_size),
           "--runtime", runtime]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if out is not None:
        cmd += ["--out", out]
    return cmd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="meld", help="shipped model name or checkpoint path (default: meld)")
    ap.add_argument("--data-dir", help="MELD folder (default: the usual lookup, e.g. ../shared/data/meld)")
    ap.add_argument("--throughput-utterances", type=int, default=50_000,
                    help="utterances in the throughput run (default 50,000)")
    ap.add_argument("--n-utterances", type=int, default=1_000_000,
                    help="utterances in the streaming-memory run (default 1,000,000; 0 skips it)")
    ap.add_argument("--cold-runs", type=int, default=3, help="cold-start repetitions (median reported)")
    ap.add_argument("--threads", type=int, help="torch threads for every run (default: torch's choice)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnxruntime", "onnxruntime-int8"],
                    help="transformer encoders' runtime (iein predict --runtime)")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)

    import torch

    from iein.recognizer import Recognizer, resolve_model

    model = str(resolve_model(args.model))  # fail early, before generating data
    dialogues = meld_dialogues(args.data_dir)
    results: dict[str, float] = {}
    rows: list[tuple[str, str, str]] = []

    with tempfile.TemporaryDirectory(prefix="iein-bench-") as tmp:
        tmp_dir = Path(tmp)
        one = tmp_dir / "one.jsonl"
        write_jsonl(one, dialogues[:1], len(dialogues[0]))

        # cold start
        code = COLD.format(threads=args.threads, model=model, conv=json.dumps(dialogues[0]), runtime=args.runtime)
        cold = []
        for _ in range(args.cold_runs):
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            cold.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        results["cold_start_s"] = statistics.median(c["total"] for c in cold)
        results["cold_import_load_s"] = statistics.median(c["load"] for c in cold)
        cli_one = [run(cli(model, one, args.threads, args.batch_size, None, args.runtime))[0] for _ in range(args.cold_runs)]
        results["cli_one_dialogue_wall_s"] = statistics.median(cli_one)
        rows += [
            ("cold start: import + load + first predict", f"{results['cold_start_s']:.2f} s", "< 3 s"),
            ("  of which import + load", f"{results['cold_import_load_s']:.2f} s", ""),
            ("`iein predict` on one dialogue (process wall)", f"{results['cli_one_dialogue_wall_s']:.2f} s", ""),
        ]

        # throughput of the CLI
        src = tmp_dir / "throughput.jsonl"
        n_dlg, n_utt = write_jsonl(src, dialogues, args.throughput_utterances)
        wall, rss, _ = run(cli(model, src, args.threads, args.batch_size, str(tmp_dir / "out.jsonl"), args.runtime))
        steady = wall - results["cli_one_dialogue_wall_s"]
        results.update(throughput_utterances=n_utt, throughput_dialogues=n_dlg, throughput_wall_s=wall,
                       throughput_utt_per_s=n_utt / wall,
                       throughput_steady_utt_per_s=n_utt / steady if steady > 0 else float("nan"),
                       throughput_peak_rss_mb=rss)
        rows += [
            (f"`iein predict` {n_utt:,} utt / {n_dlg:,} dialogues, end to end",
             f"{n_utt / wall:,.0f} utt/s", ">= 3,000 utt/s"),
            ("  steady state (minus one-dialogue run)", f"{results['throughput_steady_utt_per_s']:,.0f} utt/s", ""),
            ("  peak RSS", f"{rss:,.0f} MiB", ""),
        ]

        # in-process API throughput (no I/O, no JSON)
        rec = Recognizer.load(model, runtime=args.runtime)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        convs = [c for c in itertools.islice(itertools.cycle(dialogues), n_dlg)]
        t0 = time.perf_counter()
        n = sum(len(r) for r in rec.predict_many(convs, batch_size=args.batch_size))
        api = n / (time.perf_counter() - t0)
        results["api_utt_per_s"] = api
        rows.append(("Recognizer.predict_many (in process)", f"{api:,.0f} utt/s", ""))
        del rec, convs

        # streaming memory
        if args.n_utterances > 0:
            big = tmp_dir / "stream.jsonl"
            n_dlg, n_utt = write_jsonl(big, dialogues, args.n_utterances)
            size_mb = big.stat().st_size / 2**20
            wall, rss, _ = run(cli(model, big, args.threads, args.batch_size, None, args.runtime))
            results.update(stream_utterances=n_utt, stream_file_mb=size_mb, stream_wall_s=wall,
                           stream_peak_rss_mb=rss, stream_utt_per_s=n_utt / wall)
            rows += [
                (f"stream {n_utt:,} utt ({size_mb:,.0f} MiB JSONL) -> /dev/null: peak RSS",
                 f"{rss:,.0f} MiB", "< 1 GB"),
                ("  wall / throughput", f"{wall:,.1f} s / {n_utt / wall:,.0f} utt/s", ""),
            ]

    threads = args.threads if args.threads is not None else torch.get_num_threads()
    print(f"iein predict benchmark: model {args.model} ({model}), runtime {args.runtime}, threads {threads}, "
          f"batch size {args.batch_size}, {os.cpu_count()} CPUs")
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"{'measure'.ljust(w0)}  {'value'.rjust(w1)}  target")
    for name, value, target in rows:
        print(f"{name.ljust(w0)}  {value.rjust(w1)}  {target}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
