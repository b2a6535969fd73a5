"""Benchmark: the query side's encoders on ONNX Runtime against torch (sentence-transformers).

Reads an index folder the pipeline built (default: the newest under the demo's lake root, so run
`make demo` first), encodes its first --chunks chunk texts with each model on both runtimes
(throughput after a warm-up, largest difference between the two runtimes' unit vectors) and
times one query at a time (p50 over --queries Debian FAQ headings from the same index). Prints
both runtimes side by side; writes bench/results/encoders.json.

    .venv/bin/python bench/encoders.py [--index DIR] [--chunks 61] [--queries 40]
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

from lakerag.retrieval.encoders import encode  # noqa: E402
from lakerag.retrieval.index_files import latest_index  # noqa: E402
from lakerag.settings import Settings  # noqa: E402

MODELS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")
RUNTIMES = ("torch", "onnxruntime")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=None,
                        help="index folder (default: the newest under lakehouse/demo/indexes/lakerag/dev)")
    parser.add_argument("--chunks", type=int, default=61, help="chunk texts to encode (default %(default)s)")
    parser.add_argument("--queries", type=int, default=40, help="single queries to time (default %(default)s)")
    args = parser.parse_args()
    folder = args.index or latest_index(Path("lakehouse/demo/indexes/lakerag/dev"), Settings())
    chunks = pd.read_parquet(folder / "chunks.parquet")
    texts = chunks["text"].head(args.chunks).tolist()
    faq = chunks[chunks["file_name"] == "debian-faq.pdf"]
    queries = [path[-1] for path in faq["heading_path"]][: args.queries]
    result: dict = {"measured_at": datetime.now(timezone.utc).isoformat(), "index": str(folder),
                    "chunks": len(texts), "queries": len(queries), "models": {}}
    for model in MODELS:
        figures: dict = {}
        vectors = {}
        for runtime in RUNTIMES:
            encode(model, texts[:2], runtime)  # warm-up: load, and export once per machine
            started = time.perf_counter()
            vectors[runtime] = encode(model, texts, runtime)
            seconds = time.perf_counter() - started
            samples = []
            for query in queries:
                started = time.perf_counter()
                encode(model, [query], runtime)
                samples.append(time.perf_counter() - started)
            figures[runtime] = {"chunks_per_s": len(texts) / seconds,
                                "query_p50_ms": float(np.percentile(samples, 50)) * 1000}
        figures["max_abs_difference"] = float(np.abs(vectors["torch"] - vectors["onnxruntime"]).max())
        result["models"][model] = figures
        print(f"{model}: chunks/s torch {figures['torch']['chunks_per_s']:.2f}, onnxruntime "
              f"{figures['onnxruntime']['chunks_per_s']:.2f}; one query p50 torch "
              f"{figures['torch']['query_p50_ms']:.1f} ms, onnxruntime {figures['onnxruntime']['query_p50_ms']:.1f} ms; "
              f"largest difference {figures['max_abs_difference']:.1e}")
    write_result("encoders", result)


if __name__ == "__main__":
    main()
