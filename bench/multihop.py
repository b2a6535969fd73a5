"""Benchmark: multi-hop vs one-hop answers with the packaged local LLM (chain.multi_hop).

Each question below asks about two things that live in two different documents of the corpus.
On an index of those documents (bronze -> silver -> gold -> index, as the pipeline does), the
chain answers every question twice with the default packaged LLM on this CPU: one-hop (the
default) and multi-hop (the LLM splits the question, each sub-question retrieves chain.k
sections). Per question and mode it records whether sections of both documents were among the
sources given to the model, whether its verified citations name both, the sub-questions the model wrote and
the latency. Prints the table and the totals; writes bench/results/multihop.json.

    .venv/bin/python bench/multihop.py
"""
from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from common import silver_lakehouse, write_result  # noqa: E402

from lakerag.chain.rag import RagChain  # noqa: E402
from lakerag.enrich.embeddings import run_gold  # noqa: E402
from lakerag.enrich.index_build import build_index  # noqa: E402
from lakerag.chain.llm import make_llm  # noqa: E402
from lakerag.retrieval.retriever import Retriever  # noqa: E402
from lakerag.settings import Settings  # noqa: E402
from lakerag.tracking import configure_mlflow, use_experiment  # noqa: E402

FILES = ["debian-faq.pdf", "R-data.pdf", "R-intro.pdf", "mnras_guide.pdf"]
# (question, the two documents that hold its halves)
QUESTIONS = [
    ("How do I keep my Debian system up to date, and how do I read an Excel spreadsheet into R?",
     {"debian-faq.pdf", "R-data.pdf"}),
    ("What is dpkg, and how can R read data from a relational database?", {"debian-faq.pdf", "R-data.pdf"}),
    ("How do I write my own function in R, and what is the Debian release cycle?", {"R-intro.pdf", "debian-faq.pdf"}),
    ("How should figures be prepared for an MNRAS paper, and how does R read fixed-width format files?",
     {"mnras_guide.pdf", "R-data.pdf"}),
    ("How are references cited in MNRAS, and how do I create a matrix in R?", {"mnras_guide.pdf", "R-intro.pdf"}),
    ("Where can I get the Debian source code, and how do I make a scatter plot in R?",
     {"debian-faq.pdf", "R-intro.pdf"}),
]


def run_mode(chain: RagChain, file_of: dict[str, str]) -> list[dict]:
    """Answer every question; which documents its sources came from and which it cited."""
    rows = []
    for question, expected in QUESTIONS:
        out = chain.answer([{"role": "user", "content": question}])
        cited = {c["file_name"] for c in out["citations"]}  # verified citations only
        rows.append({
            "question": question,
            "sources_from_both": expected <= {file_of[c["section_id"]] for c in out["contexts"]},
            "cited_both": expected <= cited,
            "sub_questions": [s["question"] for s in out["steps"]],
            "sources": len(out["contexts"]),
            "latency_s": out["latency_s"],
            "llm_calls": out["usage"]["llm_calls"],
            "answer": out["answer"],
        })
    return rows


def print_results(results: dict[str, list[dict]]) -> None:
    """Per question and mode: both documents among the sources / cited, sub-questions, latency."""
    for mode, rows in results.items():
        print(f"\n{mode}")
        for number, row in enumerate(rows, 1):
            print(f"  Q{number} sources from both: {'yes' if row['sources_from_both'] else 'no ':3}  cited both: "
                  f"{'yes' if row['cited_both'] else 'no ':3}  {row['sources']} sources  {row['latency_s']:5.1f} s  "
                  f"{row['llm_calls']} LLM calls")
            for sub in row["sub_questions"]:
                print(f"       sub-question: {sub}")
        print(f"  {mode}: sources from both documents {sum(r['sources_from_both'] for r in rows)}/{len(rows)}, "
              f"cited both {sum(r['cited_both'] for r in rows)}/{len(rows)}, "
              f"decomposed into 2+ sub-questions {sum(len(r['sub_questions']) > 1 for r in rows)}/{len(rows)}, "
              f"median latency {statistics.median(r['latency_s'] for r in rows):.1f} s")


def main() -> int:
    settings = Settings()
    with tempfile.TemporaryDirectory() as scratch, \
            silver_lakehouse(Path(scratch), settings, FILES) as (spark, lakehouse):
        run_gold(spark, lakehouse, settings)
        folder = build_index(spark, lakehouse, settings, Path(scratch) / "indexes").folder
        chunks = pd.read_parquet(folder / "chunks.parquet", columns=["section_id", "file_name"])
        file_of = dict(zip(chunks["section_id"], chunks["file_name"]))
        # the chain traces every step: keep the traces in the scratch folder, not in ./mlflow.db
        configure_mlflow(None, None, Path(scratch))
        use_experiment("lakerag-bench-multihop", Path(scratch))
        retriever = Retriever.from_settings(folder, settings)
        llm = make_llm(settings.llm)
        results = {}
        for mode, multi_hop in (("one-hop", False), ("multi-hop", True)):
            chain = RagChain(retriever, llm, dataclasses.replace(settings.chain, multi_hop=multi_hop))
            results[mode] = run_mode(chain, file_of)
    print_results(results)
    write_result("multihop", {"model": settings.llm.model, "files": FILES, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
