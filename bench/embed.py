"""Benchmark: chunks/s of the gold embedding job against plain SentenceTransformer.encode.

Builds bronze and silver from data/corpus in a temporary lakehouse, then embeds the texts gold
embeds (chunks with their title and heading path; no summaries here) with the same model and
batch size: with plain `SentenceTransformer.encode` (the baseline), then through the gold job (`run_gold`: Spark read, mapInPandas, Delta write), then
with plain encode again; the baseline is the mean of the two plain runs, so drift on a shared
machine does not favour either side. The model is loaded and warmed up (its first encode pays
one-off costs) before anything is timed. Prints the rates and the ratio (goal >= 0.85); writes
bench/results/embed.json.

    .venv/bin/python bench/embed.py [--files R-data.pdf debian-faq.pdf]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import silver_lakehouse, write_result  # noqa: E402

from lakerag.enrich.embeddings import gold_items, run_gold  # noqa: E402
from lakerag.retrieval.encoders import torch_encode  # noqa: E402
from lakerag.weights import load_sentence_model  # noqa: E402
from lakerag.settings import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="*", help="corpus PDFs to use (default: all)")
    args = parser.parse_args()
    settings = Settings()
    model, batch = settings.models.embedding, settings.gold.batch_size
    with tempfile.TemporaryDirectory() as root, silver_lakehouse(Path(root), settings, args.files) as (spark, lh):
        # the texts gold embeds: chunks with their title and heading path (gold.contextual_text)
        texts = [r.text for r in gold_items(spark, lh, settings).select("text").collect()]
        load_sentence_model(model)
        torch_encode(model, texts[:batch], batch)  # warm-up
        plain_runs = [timed(lambda: torch_encode(model, texts, batch))]
        gold_s = timed(lambda: run_gold(spark, lh, settings))
        plain_runs.append(timed(lambda: torch_encode(model, texts, batch)))
    plain_s = sum(plain_runs) / 2
    plain_rate, gold_rate = len(texts) / plain_s, len(texts) / gold_s
    print(f"{len(texts)} chunks of strategies {list(settings.gold.strategies)}, model {model}, batch {batch}")
    print(f"plain SentenceTransformer.encode: {plain_runs[0]:.1f} s before, {plain_runs[1]:.1f} s after "
          f"-> {plain_rate:.1f} chunks/s (baseline)")
    print(f"gold job (run_gold):              {gold_s:.1f} s = {gold_rate:.1f} chunks/s "
          f"= {gold_rate / plain_rate:.2f} x baseline (goal >= 0.85)")
    write_result("embed", {"chunks": len(texts), "model": model, "batch_size": batch,
                           "plain_s": [round(s, 2) for s in plain_runs], "gold_s": round(gold_s, 2),
                           "ratio": round(gold_rate / plain_rate, 3)})


def timed(work) -> float:
    """Seconds `work()` takes."""
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
