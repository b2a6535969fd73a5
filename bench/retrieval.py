"""Benchmark: query latency of the retriever at 100k chunks, against raw FAISS.

Builds silver and gold for two corpus PDFs (R data manual, Debian FAQ), then grows them to
--size chunks by repeating the real chunks under new ids with their vectors jittered and
re-normalised (so no two vectors are equal), and writes an index folder with the same code the
pipeline uses (flat FAISS below retrieval.exact_below, bm25s). Stored rerank vectors are random
unit vectors of all-mpnet-base-v2's size: the reranker's cost is real (it encodes the query with
mpnet and rescores 20 candidates), its scores are not. Queries are the Debian FAQ's questions.
Prints p50/p99 per mode (hybrid with the default z-score fusion and blended rescoring, and
with the RRF and mpnet-alone rescoring before issue 18; hybrid with and without rerank with the
query encoders on torch instead of ONNX Runtime) and raw FAISS (search only, and query
encoding + search) in the same run; writes bench/results/retrieval.json.

    .venv/bin/python bench/retrieval.py [--size 100000] [--queries 100]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyspark.sql.functions as F

sys.path.insert(0, str(Path(__file__).parent))
from common import grown_index, silver_lakehouse, write_result  # noqa: E402

from lakerag.enrich.embeddings import run_gold  # noqa: E402
from lakerag.enrich.index_build import build_index  # noqa: E402
from lakerag.retrieval.retriever import Filters, Retriever  # noqa: E402
from lakerag.settings import RetrievalSettings, Settings  # noqa: E402
from lakerag.lakehouse.tables import SILVER_SECTIONS  # noqa: E402


def percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50)) * 1000, float(np.percentile(samples, 99)) * 1000


def timed_queries(run, queries: list[str]) -> tuple[float, float]:
    samples = []
    for query in queries:
        started = time.perf_counter()
        run(query)
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000, help="chunks in the index (default %(default)s)")
    parser.add_argument("--queries", type=int, default=100, help="queries per mode (default %(default)s)")
    args = parser.parse_args()
    settings = Settings()
    with tempfile.TemporaryDirectory() as root:
        with silver_lakehouse(Path(root), settings, ["R-data.pdf", "debian-faq.pdf"]) as (spark, lh):
            run_gold(spark, lh, settings)
            seed = build_index(spark, lh, settings, Path(root) / "seed").folder
            questions = [r.title for r in spark.table(lh.table(SILVER_SECTIONS.name))
                         .filter(F.col("title").endswith("?")).select("title").collect()]
        started = time.perf_counter()
        folder, restricted = grown_index(seed, Path(root) / "big" / "v0", args.size, settings)
        build_s = time.perf_counter() - started
        retriever = Retriever.from_settings(folder, settings)
        # the fusion and rescoring before issue 18, on the same index
        before = Retriever(folder, dataclasses.replace(settings.retrieval, fusion="rrf", bm25_weight=1.0,
                                                       rerank_first_stage_weight=0.0), settings.models.rerank)
        # the encoders on torch, as before retrieval.encoder_runtime (ONNX Runtime by default)
        on_torch = Retriever(folder, dataclasses.replace(settings.retrieval, encoder_runtime="torch"),
                             settings.models.rerank)
        queries = (questions * (args.queries // len(questions) + 1))[: args.queries]
        for query in queries[:5]:  # load models, warm caches
            retriever.search(query, mode="hybrid")
            before.search(query, mode="hybrid")
            on_torch.search(query, mode="hybrid")
        results = {"chunks": args.size, "queries": len(queries), "index_build_s": round(build_s, 1)}
        query_vectors = {q: retriever.embed_query(q) for q in set(queries)}
        rows = [
            ("raw FAISS search (vector given)", lambda q: retriever.dense.search(query_vectors[q], 50)),
            ("raw FAISS: encode query + search", lambda q: retriever.dense.search(retriever.embed_query(q), 50)),
            ("dense", lambda q: retriever.search(q, k=5, mode="dense", rerank=False)),
            ("bm25", lambda q: retriever.search(q, k=5, mode="bm25", rerank=False)),
            ("hybrid rrf (before issue 18)", lambda q: before.search(q, k=5, mode="hybrid", rerank=False)),
            ("hybrid", lambda q: retriever.search(q, k=5, mode="hybrid", rerank=False)),
            ("hybrid, encoders on torch", lambda q: on_torch.search(q, k=5, mode="hybrid", rerank=False)),
            (f"hybrid, reader in users ({(~restricted).mean():.0%} readable)",
             lambda q: retriever.search(q, k=5, mode="hybrid", rerank=False, filters=Filters(groups=("users",)))),
            ("hybrid, reader in hr + users (all)",
             lambda q: retriever.search(q, k=5, mode="hybrid", rerank=False, filters=Filters(groups=("hr", "users")))),
            ("hybrid rrf + rerank (before issue 18)", lambda q: before.search(q, k=5, mode="hybrid", rerank=True)),
            ("hybrid+rerank", lambda q: retriever.search(q, k=5, mode="hybrid", rerank=True)),
            ("hybrid+rerank, encoders on torch", lambda q: on_torch.search(q, k=5, mode="hybrid", rerank=True)),
        ]
        print(f"{args.size} chunks (flat FAISS, bm25s), {len(queries)} queries, index written in {build_s:.1f} s")
        for name, run in rows:
            p50, p99 = timed_queries(run, queries)
            results[name] = {"p50_ms": round(p50, 2), "p99_ms": round(p99, 2)}
            print(f"{name:<40} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms")
        raw = results["raw FAISS: encode query + search"]["p50_ms"]
        hybrid = results["hybrid"]["p50_ms"]
        print(f"hybrid p50 / (encode + FAISS) p50 = {hybrid / raw:.2f} (goal: hybrid p50 <= 20 ms and <= 2x raw FAISS)")
        write_result("retrieval", results)


if __name__ == "__main__":
    main()
