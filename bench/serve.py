"""Benchmark: latency and throughput of the REST endpoint (`lakerag serve`) with the local LLM.

Starts `lakerag serve` on a free loopback port with the registered chain (default
models:/lakerag_chain@challenger in the lakehouse `make demo` builds), sends one warm-up request,
then --sequential requests one after another (the baseline: one client) and --per-client requests
from each of --clients concurrent clients. Prints p50/p95 latency of /invocations and requests/s
for both, and the ratio of concurrent to sequential throughput (one LLM on 2 cores answers one
request at a time, so about 1.0 is the ceiling). Writes bench/results/serve.json.

    make demo && .venv/bin/python bench/serve.py [--lake-root lakehouse/demo]
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import REPO, write_result  # noqa: E402

QUESTIONS = [
    "What is the format of a Debian binary package?",
    "How can I keep my Debian system current?",
    "How do I read an Excel spreadsheet into R?",
    "What is a Debian control file?",
    "How can I import data from a relational database into R?",
    "What is dpkg?",
]


def ask(base: str, question: str) -> float:
    """Seconds for one /invocations request (raises on a non-200 answer)."""
    body = json.dumps({"messages": [{"role": "user", "content": question}]}).encode()
    request = urllib.request.Request(base + "/invocations", data=body, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        json.loads(response.read())
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def summary(latencies: list[float], wall: float) -> dict:
    return {"requests": len(latencies), "p50_s": round(percentile(latencies, 50), 2),
            "p95_s": round(percentile(latencies, 95), 2), "requests_per_s": round(len(latencies) / wall, 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake-root", default="lakehouse/demo")
    parser.add_argument("--model", default="models:/lakerag_chain@challenger")
    parser.add_argument("--sequential", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-client", type=int, default=2)
    args = parser.parse_args()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "lakerag.cli", "serve", "--model", args.model, "--port", str(port),
                               "--lake-root", args.lake_root, "-q"], cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    print("the server exited: is the model registered? run `make demo` first", file=sys.stderr)
                    return 1
                time.sleep(1)
        load_s = time.perf_counter() - started
        print(f"server up in {load_s:.1f} s; warm-up request {ask(base, QUESTIONS[0]):.1f} s")

        t0 = time.perf_counter()
        one = [ask(base, QUESTIONS[i % len(QUESTIONS)]) for i in range(args.sequential)]
        sequential = summary(one, time.perf_counter() - t0)
        print(f"1 client:  {sequential}")

        jobs = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.clients * args.per_client)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            many = list(pool.map(lambda q: ask(base, q), jobs))
        concurrent = summary(many, time.perf_counter() - t0)
        print(f"{args.clients} clients: {concurrent}")
        ratio = concurrent["requests_per_s"] / sequential["requests_per_s"]
        print(f"throughput at {args.clients} clients / 1 client (baseline): {ratio:.2f}x")
    finally:
        server.terminate()
        server.wait(timeout=30)
    write_result("serve", {"model": args.model, "server_start_s": round(load_s, 1), "sequential": sequential,
                           f"concurrent_{args.clients}": concurrent, "throughput_ratio_vs_sequential": round(ratio, 2)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
