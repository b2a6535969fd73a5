"""Benchmark: pages/s of the silver job against plain single-process pypdf on the same PDFs.

Ingests data/corpus into bronze in a temporary lakehouse, then times `run_silver` (parse,
sections, chunks for every configured strategy, Delta writes) in this fresh process, so the
first run includes starting the parsing processes. A second run into a new schema shows the
steady state with the pool warm. Then times plain pypdf `page.extract_text()` over every page of
the PDFs silver parsed, in one process. Prints both rates and their ratio; writes
bench/results/silver.json.

    .venv/bin/python bench/silver.py [--workers N]   (0 = auto: one per core)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import psutil
import pyspark.sql.functions as F
from pypdf import PdfReader

from lakerag.ingest.bronze import ingest_bronze
from lakerag.lakehouse.engine import Lakehouse, spark_session
from lakerag.settings import load_settings
from lakerag.ingest.silver import run_silver
from lakerag.lakehouse.tables import SILVER_DOCUMENTS, ensure_tables

REPO = Path(__file__).resolve().parents[1]


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def timed_silver(spark, lakehouse: Lakehouse, settings) -> dict[str, float]:
    """Wall seconds, pages parsed, and CPU seconds of this process and of the parsing
    processes for one silver run over an already ingested bronze."""
    me = psutil.Process()
    main_before = cpu_seconds(me)
    started = time.perf_counter()
    run_silver(spark, lakehouse, settings, "sail")
    seconds = time.perf_counter() - started
    # The parsing pool outlives the run, so its processes can be read after it.
    workers = [child for child in me.children() if "resource_tracker" not in " ".join(child.cmdline())]
    pages = spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).agg(F.sum("page_count")).first()[0]
    return {"seconds": seconds, "pages": int(pages), "main_cpu_s": cpu_seconds(me) - main_before,
            "workers_cpu_s": sum(cpu_seconds(child) for child in workers)}


def plain_pypdf(paths: list[str]) -> tuple[float, int]:
    """Seconds and pages for pypdf text extraction of every page, one process."""
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    started, pages = time.perf_counter(), 0
    for path in paths:
        for page in PdfReader(path).pages:
            page.extract_text()
            pages += 1
    return time.perf_counter() - started, pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=0, help="silver.parse_workers (default 0 = auto)")
    parser.add_argument("--tables", action="store_true",
                        help="silver.tables on (ruled tables as Markdown); results go to silver-tables.json")
    parser.add_argument("--no-layout", action="store_true",
                        help="silver.layout off (no layout model); results go to silver-nolayout.json")
    args = parser.parse_args()
    os.environ.setdefault("RUST_LOG", "error")
    base = load_settings(REPO / "conf" / "pipeline.yml")
    settings = dataclasses.replace(base, silver=dataclasses.replace(base.silver, parse_workers=args.workers,
                                                                     tables=args.tables or base.silver.tables,
                                                                     layout=base.silver.layout and not args.no_layout))
    with tempfile.TemporaryDirectory() as root:
        results = {}
        with spark_session("sail", Lakehouse("bench", "cold", Path(root))) as spark:
            for schema in ("cold", "warm"):
                lakehouse = Lakehouse("bench", schema, Path(root))
                spark.sql(f"CREATE SCHEMA IF NOT EXISTS bench.{schema}")
                ensure_tables(spark, lakehouse)
                ingest_bronze(spark, lakehouse, str(REPO / "data" / "corpus"), settings.bronze)
                results[schema] = timed_silver(spark, lakehouse, settings)
            paths = [r.source_path for r in spark.table(lakehouse.table(SILVER_DOCUMENTS.name))
                     .select("source_path").collect()]
    plain_s, plain_pages = plain_pypdf(paths)
    plain_rate = plain_pages / plain_s
    print(f"corpus: {len(paths)} parsed PDFs, {plain_pages} pages; {os.cpu_count()} cores")
    print(f"plain pypdf extract_text, 1 process: {plain_s:.2f} s = {plain_rate:.1f} pages/s (baseline)")
    report = {"cores": os.cpu_count(), "workers": args.workers, "tables": settings.silver.tables,
              "layout": settings.silver.layout,
              "ocr": settings.silver.ocr, "pdfs": len(paths), "pages": plain_pages,
              "plain_pypdf_s": round(plain_s, 2), "plain_pages_per_s": round(plain_rate, 1),
              "machine": f"{platform.machine()}, Python {platform.python_version()}"}
    workers_before = 0.0
    for name, run in results.items():
        rate = run["pages"] / run["seconds"]
        workers_cpu = run["workers_cpu_s"] - workers_before  # pool processes are shared by both runs
        workers_before = run["workers_cpu_s"]
        label = "first run (starts the parsing processes)" if name == "cold" else "second run (processes warm)"
        print(f"silver job, {label}: {run['seconds']:.2f} s = {rate:.1f} pages/s = "
              f"{rate / plain_rate:.2f} x baseline; CPU: this process {run['main_cpu_s']:.1f} s, "
              f"parsing processes {workers_cpu:.1f} s")
        report[name] = {"seconds": round(run["seconds"], 2), "pages_per_s": round(rate, 1),
                        "ratio": round(rate / plain_rate, 2), "main_cpu_s": round(run["main_cpu_s"], 1),
                        "workers_cpu_s": round(workers_cpu, 1)}
    name = "silver" + ("-tables" if args.tables else "") + ("-nolayout" if args.no_layout else "")
    out = REPO / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
