"""Benchmark: retrieval quality on the Debian FAQ, from the PDF, with questions written by others.

The Debian FAQ's authors wrote each question as a heading and its answer as the section below
it. The whole pipeline runs on data/corpus/manuals/debian-faq.pdf (bronze -> silver -> gold ->
index); the parser cuts the heading from the section text, so the question's words are not
indexed with its answer. Each question (a section title ending in "?") is a query and its own
section is the one relevant result. Prints recall@5, MRR@10 and nDCG@10 (computed with ranx) for
BM25, dense, hybrid and hybrid + rerank; writes bench/results/retrieval_quality.json. The
reranker's mpnet vectors are embedded by the gold job (gold.extra_models), as a deployment
that reranks would configure it.

Baselines from ../shared/MODELS.md, measured on the FAQ's plain-text edition: BM25 0.566,
MiniLM 0.754, MiniLM top-20 rescored by mpnet 0.830 nDCG@10. Goal: hybrid + rerank >= 0.85.

    .venv/bin/python bench/retrieval_quality.py
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import pyspark.sql.functions as F
from ranx import Qrels, Run, evaluate

sys.path.insert(0, str(Path(__file__).parent))
from common import silver_lakehouse, write_result  # noqa: E402

from lakerag.enrich.embeddings import run_gold  # noqa: E402
from lakerag.enrich.index_build import build_index  # noqa: E402
from lakerag.retrieval.retriever import Retriever  # noqa: E402
from lakerag.settings import Settings  # noqa: E402
from lakerag.lakehouse.tables import SILVER_SECTIONS  # noqa: E402

METRICS = ["recall@5", "mrr@10", "ndcg@10"]
DEPTH = 10


def main() -> None:
    base = Settings()
    settings = dataclasses.replace(base, gold=dataclasses.replace(base.gold, extra_models=(base.models.rerank,)))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        with silver_lakehouse(Path(root), settings, ["debian-faq.pdf"]) as (spark, lakehouse):
            run_gold(spark, lakehouse, settings)
            folder = build_index(spark, lakehouse, settings, Path(root) / "indexes").folder
            questions = {r.section_id: r.title for r in spark.table(lakehouse.table(SILVER_SECTIONS.name))
                         .filter(F.col("title").endswith("?") & (F.length(F.trim("text")) > 0)).collect()}
        build_s = time.perf_counter() - started
        retriever = Retriever.from_settings(folder, settings)
        qrels = Qrels({qid: {qid: 1} for qid in questions})
        print(f"{len(questions)} questions from the Debian FAQ PDF, {retriever.manifest['vectors']} "
              f"{settings.retrieval.strategy} chunks indexed (pipeline built in {build_s:.0f} s)")
        results = {"questions": len(questions)}
        for name, mode, rerank in [("bm25", "bm25", False), ("dense", "dense", False),
                                   ("hybrid", "hybrid", False), ("hybrid+rerank", "hybrid", True)]:
            run = {}
            for qid, question in questions.items():
                hits = retriever.search(question, k=DEPTH, mode=mode, rerank=rerank)
                run[qid] = {hit.section_id: float(DEPTH - rank) for rank, hit in enumerate(hits)} or {"none": 0.0}
            scores = evaluate(qrels, Run(run), METRICS)
            results[name] = {metric: round(float(value), 3) for metric, value in scores.items()}
            print(f"{name:<14} " + "  ".join(f"{metric} {value:.3f}" for metric, value in scores.items()))
    write_result("retrieval_quality", results)


if __name__ == "__main__":
    main()
