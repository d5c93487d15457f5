"""Load test for ``iein serve``: N concurrent clients for T seconds, on loopback only.

Starts its own server (``python -m iein.cli serve`` on 127.0.0.1, a free port) with the
given model, warms it up, then runs ``--clients`` threads, each with one keep-alive
connection, posting the paper's 10-utterance MELD example to ``/predict`` until
``--seconds`` have passed or ``--max-requests`` were sent.  Reports requests/s, latency
percentiles and errors; exits 1 if any request failed.  Bounded: at most 256 clients,
600 seconds and the request cap; it never talks to anything but the server it started.

    python bench/bench_serve.py --model runs/meld-seed0.safetensors --clients 16 --seconds 60
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from iein.data.examples import TABLE5_EXAMPLE

HOST = "127.0.0.1"  # loopback only, by design
EXAMPLE = list(TABLE5_EXAMPLE)
BODY = json.dumps({"utterances": [{"speaker": s, "text": t} for s, t in EXAMPLE]}).encode()
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, threads: int | None, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "iein.cli", "serve", "--model", model, "--host", HOST, "--port", str(port)]
    if threads:
        cmd += ["--threads", str(threads)]
    out = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not answer /health within 120 s; see {log}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and its threads (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def run_load(port: int, clients: int, seconds: float, max_requests: int) -> dict:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[dict[str, int]] = [{} for _ in range(clients)]
    budget = threading.Semaphore(max_requests)
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        lat, err = latencies[i], errors[i]
        start_gate.wait()
        while time.perf_counter() < stop_at[0] and budget.acquire(blocking=False):
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=BODY, headers=HEADERS)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    err[f"HTTP {resp.status}"] = err.get(f"HTTP {resp.status}", 0) + 1
                    continue
                if len(json.loads(data)["utterances"]) != len(EXAMPLE):
                    err["bad body"] = err.get("bad body", 0) + 1
                    continue
                lat.append(time.perf_counter() - t0)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                name = type(exc).__name__
                err[name] = err.get(name, 0) + 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=30)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    t_start = time.perf_counter()
    stop_at[0] = t_start + seconds
    start_gate.wait()
    for t in threads:
        t.join(seconds + 60)
    elapsed = time.perf_counter() - t_start
    all_lat = sorted(x for lat in latencies for x in lat)
    all_err: dict[str, int] = {}
    for err in errors:
        for k, v in err.items():
            all_err[k] = all_err.get(k, 0) + v
    ms = lambda q: round(1000 * percentile(all_lat, q), 2)  # noqa: E731
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests_ok": len(all_lat),
        "errors": sum(all_err.values()),
        "error_kinds": all_err,
        "requests_per_s": round(len(all_lat) / elapsed, 1),
        "latency_ms": {"p50": ms(50), "p90": ms(90), "p99": ms(99),
                       "max": round(1000 * all_lat[-1], 2) if all_lat else None},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.environ.get("IEIN_BENCH_MODEL", "meld"),
                    help="checkpoint path or shipped model name (default: meld)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (1..256, default 16)")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of the measured run (default 10, max 600)")
    ap.add_argument("--max-requests", type=int, default=1_000_000, help="stop after this many requests")
    ap.add_argument("--warmup", type=int, default=50, help="unmeasured requests first (default 50)")
    ap.add_argument("--threads", type=int, help="torch threads of the server (serve --threads)")
    ap.add_argument("--target-p99-ms", type=float, default=100.0, help="report whether p99 is under this")
    ap.add_argument("--json", help="also write the report to this file")
    args = ap.parse_args(argv)
    if not 1 <= args.clients <= 256:
        ap.error("--clients must be 1..256")
    if not 0 < args.seconds <= 600:
        ap.error("--seconds must be in (0, 600]")
    if args.max_requests < 1:
        ap.error("--max-requests must be >= 1")

    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"iein-bench-serve-{port}.log"
    proc = start_server(args.model, port, args.threads, log)
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        for _ in range(args.warmup):
            conn.request("POST", "/predict", body=BODY, headers=HEADERS)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise SystemExit(f"warm-up request failed: HTTP {resp.status}")
        conn.close()
        cpu0, load0 = cpu_seconds(proc.pid), os.getloadavg()[0]
        report = run_load(port, args.clients, args.seconds, args.max_requests)
        cpu1 = cpu_seconds(proc.pid)
        if cpu0 is not None and cpu1 is not None and report["requests_ok"]:
            report["server_cpu_ms_per_request"] = round(1000 * (cpu1 - cpu0) / report["requests_ok"], 2)
            report["server_cpu_share"] = round((cpu1 - cpu0) / report["seconds"], 2)
        report["load_average_before"] = round(load0, 2)
    finally:
        stop_server(proc)
    report.update(model=args.model, server_threads=args.threads, utterances_per_request=len(EXAMPLE),
                  cpus=os.cpu_count(), target_p99_ms=args.target_p99_ms,
                  p99_under_target=report["latency_ms"]["p99"] < args.target_p99_ms)
    lat = report["latency_ms"]
    print(f"{report['clients']} clients, {report['seconds']} s, "
          f"{report['utterances_per_request']} utterances a request: "
          f"{report['requests_ok']} ok, {report['errors']} errors {report['error_kinds'] or ''}")
    print(f"throughput {report['requests_per_s']} requests/s | latency p50 {lat['p50']} ms, p90 {lat['p90']} ms, "
          f"p99 {lat['p99']} ms, max {lat['max']} ms | p99 < {args.target_p99_ms:g} ms: "
          f"{'yes' if report['p99_under_target'] else 'NO'}")
    if "server_cpu_ms_per_request" in report:
        print(f"server CPU {report['server_cpu_ms_per_request']} ms a request "
              f"({report['server_cpu_share']} cores busy); "
              f"load average before the run {report['load_average_before']} on {report['cpus']} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
