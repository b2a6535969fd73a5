"""Benchmark: how long the embedded Sail engine takes to start, in fresh processes.

Each run is a new Python process that imports the engine, starts the Spark Connect server,
connects, and answers `SELECT 1`. Prints per-run figures, the median, and the ratio to the
2.0 s target of issue 2; writes bench/results/engine_start.json.

    .venv/bin/python bench/engine_start.py [--runs 7]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET_S = 2.0
PROBE = r"""
import json, os, sys, time
os.environ.setdefault("RUST_LOG", "error")
t0 = time.perf_counter()
from lakerag.lakehouse.engine import Lakehouse, spark_session
t1 = time.perf_counter()
with spark_session("sail", Lakehouse("bench", "b", sys.argv[1])) as spark:
    spark.sql("SELECT 1").collect()
    t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "start_s": t2 - t1}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="fresh processes to time (default %(default)s)")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as root:
        for i in range(args.runs):
            out = subprocess.run([sys.executable, "-c", PROBE, root], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"run {i + 1}: import {runs[-1]['import_s']:.2f} s, server start + connect + SELECT 1 "
                  f"{runs[-1]['start_s']:.2f} s")
    start = statistics.median(r["start_s"] for r in runs)
    total = statistics.median(r["import_s"] + r["start_s"] for r in runs)
    print(f"\nmedian engine start (server + connect + first query): {start:.2f} s "
          f"= {start / TARGET_S:.2f} x the {TARGET_S:.1f} s target")
    print(f"median including imports: {total:.2f} s = {total / TARGET_S:.2f} x the target")
    result = {
        "runs": runs, "median_start_s": round(start, 3), "median_with_imports_s": round(total, 3),
        "target_s": TARGET_S, "machine": f"{platform.machine()}, {platform.python_version()}",
    }
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "engine_start.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
