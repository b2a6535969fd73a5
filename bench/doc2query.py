"""Benchmark: questions per section (doc2query, issue 18 item 5), from the PDFs, on two question sets.

The whole pipeline on the three manuals of data/corpus/manuals, as bench/retrieval_quality.py
builds it (MiniLM and the reranker's mpnet vectors in gold), plus the summaries job with
`summaries.fields: [questions]` run over every section with text (no budget, the whole
section in the prompt). The LLM writes each section's questions with the section's own heading
withheld from its prompt (the heading path stops at the parent), because a Debian FAQ question
*is* its section's heading: a generator that saw it could copy the benchmark's question.
The questions are saved in bench/data/doc2query_questions.json (by file and heading path) and
read back on the next run instead of asking the LLM again (--regenerate asks again).

Then, per text form (context: the product default; withheld: each chunk's own heading cut, the
body-retrieval benchmark), three indexes: without the questions (gold.questions false), with
each question as its own vector (gold.questions true: the product's doc2query), and with the
section's questions appended to its chunks' text instead (document expansion, the original
doc2query; a benchmark mode, built here by editing silver, not a product setting). Prints nDCG@10, recall@1, recall@5 (ranx) and the
p50 of a search for each configuration and question set; writes bench/results/doc2query.json.

    .venv/bin/python bench/doc2query.py              # about 50 minutes with the LLM (34 of them generating), 20 without
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from datetime import datetime, timezone
import sys
import tempfile
import time
from pathlib import Path

import pyspark.sql.functions as F

sys.path.insert(0, str(Path(__file__).parent))
from common import REPO, section_key, silver_lakehouse, write_result  # noqa: E402
from retrieval_quality import MANUALS, measure, question_sets, withhold_own_heading  # noqa: E402

from lakerag.chain.llm import model_key  # noqa: E402
from lakerag.enrich.embeddings import run_gold  # noqa: E402
from lakerag.enrich.index_build import build_index  # noqa: E402
from lakerag.enrich.summaries import run_summaries  # noqa: E402
from lakerag.ingest.parse_pool import content_id  # noqa: E402
from lakerag.lakehouse.tables import (  # noqa: E402
    GOLD_EMBEDDINGS, SILVER_CHUNKS, SILVER_DOCUMENTS, SILVER_SECTION_SUMMARIES, SILVER_SECTIONS, merge_into)
from lakerag.retrieval.retriever import Retriever  # noqa: E402
from lakerag.settings import Settings  # noqa: E402

SAVED = REPO / "bench" / "data" / "doc2query_questions.json"
# name -> (mode, rerank, graph on); the last is the product default
CONFIGS = {
    "dense": ("dense", False, False),
    "hybrid zscore bm25 0.3": ("hybrid", False, False),
    "hybrid + rescore blended": ("hybrid", True, False),
    "hybrid + rescore blended + graph (default)": ("hybrid", True, True),
}


def sections_with_keys(spark, lakehouse) -> list:
    """Silver sections with their file name (section_id, file_name, heading_path)."""
    return (spark.table(lakehouse.table(SILVER_SECTIONS.name))
            .join(spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).select("doc_id", "file_name"), "doc_id")
            .select("section_id", "doc_id", "file_name", "heading_path").collect())


def generate(spark, lakehouse, settings: Settings) -> dict:
    """Run the summaries job for questions over every section, each prompt without its section's
    own heading; returns what it wrote and cost."""
    name = lakehouse.table(SILVER_SECTIONS.name)
    original = spark.table(name).toPandas()
    schema = spark.table(name).schema
    cut = spark.table(name).withColumn("heading_path", F.slice("heading_path", 1, F.size("heading_path") - 1))
    spark.createDataFrame(cut.toPandas(), schema).write.insertInto(name, overwrite=True)
    started = time.perf_counter()
    report = run_summaries(spark, lakehouse, settings)
    took = time.perf_counter() - started
    spark.createDataFrame(original, schema).write.insertInto(name, overwrite=True)  # the headings back
    return {"written": report.written, "seconds": round(took, 1), "prompt_tokens": report.prompt_tokens,
            "completion_tokens": report.completion_tokens}


def save(spark, lakehouse, settings: Settings, cost: dict) -> None:
    """The questions the job wrote, by file and (full) heading path, into SAVED."""
    keys = {r.section_id: section_key(r.file_name, list(r.heading_path)) for r in sections_with_keys(spark, lakehouse)}
    rows = spark.table(lakehouse.table(SILVER_SECTION_SUMMARIES.name)).collect()
    sections = {keys[r.section_id]: {"status": r.status, "questions": list(r.questions or []), "error": r.error,
                                     "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                                     "latency_s": round(r.latency_s, 2)} for r in rows}
    SAVED.write_text(json.dumps({"model": model_key(settings), "version": settings.summaries.version,
                                 "own_heading": "withheld", "cost": cost, "sections": sections},
                                indent=1, ensure_ascii=False) + "\n")


def load(spark, lakehouse, settings: Settings) -> dict:
    """SAVED's questions as silver_section_summaries rows of this lake, as the job writes them."""
    saved = json.loads(SAVED.read_text())
    model, version = model_key(settings), settings.summaries.version
    if (saved["model"], saved["version"]) != (model, version):
        raise SystemExit(f"{SAVED} holds {saved['model']} {saved['version']}, not {model} {version}: --regenerate")
    rows, now = [], datetime.now(timezone.utc)
    for r in sections_with_keys(spark, lakehouse):
        item = saved["sections"].get(section_key(r.file_name, list(r.heading_path)))
        if item is None:
            continue
        rows.append({"section_id": r.section_id, "model": model, "prompt_version": version,
                     "summary_id": content_id(r.section_id, model, version), "doc_id": r.doc_id,
                     "status": item["status"], "summary": None, "title": None, "keywords": None,
                     "questions": item["questions"] if item["status"] == "ok" else None, "error": item["error"],
                     "prompt_tokens": item["prompt_tokens"], "completion_tokens": item["completion_tokens"],
                     "latency_s": float(item["latency_s"]), "created_at": now})
    table = lakehouse.table(SILVER_SECTION_SUMMARIES.name)
    merge_into(spark, table, spark.createDataFrame(rows, SILVER_SECTION_SUMMARIES.schema), SILVER_SECTION_SUMMARIES.key)
    return saved["cost"] | {"loaded_from": str(SAVED.relative_to(REPO)), "sections": len(rows)}


def expand_chunks(spark, lakehouse) -> None:
    """Document expansion (the original doc2query): append each section's questions to the text of
    its chunks, and empty gold (the chunk ids stay the same, so gold would keep the old vectors)."""
    name = lakehouse.table(SILVER_CHUNKS.name)
    schema = spark.table(name).schema
    questions = (spark.table(lakehouse.table(SILVER_SECTION_SUMMARIES.name)).filter(F.col("status") == "ok")
                 .select("section_id", F.array_join("questions", " ").alias("questions")))
    expanded = (spark.table(name).join(questions, "section_id", "left")
                .withColumn("text", F.concat_ws("\n", "text", "questions")).drop("questions")
                .select(*schema.fieldNames()))
    spark.createDataFrame(expanded.toPandas(), schema).write.insertInto(name, overwrite=True)
    gold = lakehouse.table(GOLD_EMBEDDINGS.name)
    spark.createDataFrame([], spark.table(gold).schema).write.insertInto(gold, overwrite=True)


def measure_index(folder: Path, settings: Settings, sets: dict, suffix: str, variant: str, table: dict) -> int:
    """Every configuration of CONFIGS on `sets` against one index, into `table`; its vector count."""
    for name, (mode, rerank, graph) in CONFIGS.items():
        retrieval = settings.retrieval if graph else dataclasses.replace(settings.retrieval, graph_edges=())
        retriever = Retriever(folder, retrieval, settings.models.rerank)
        label = name + suffix
        table[label] = {set_name: measure(retriever, qs, mode, rerank) for set_name, qs in sets.items() if qs}
        print(f"{variant:<8} {label:<66} " + "   ".join(
            f"{set_name} " + " ".join(f"{value}" for value in figures.values())
            for set_name, figures in table[label].items()), flush=True)
    return retriever.manifest["vectors"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regenerate", action="store_true", help=f"ask the LLM again instead of reading {SAVED.name}")
    args = parser.parse_args()
    base = Settings()
    settings = dataclasses.replace(
        base, summaries=dataclasses.replace(base.summaries, fields=("questions",), min_chars=1, max_sections=0,
                                            max_input_chars=20_000),
        gold=dataclasses.replace(base.gold, extra_models=(base.models.rerank,), questions=True))
    results: dict = {"files": MANUALS, "variants": {}}
    with tempfile.TemporaryDirectory() as root:
        with silver_lakehouse(Path(root), base, MANUALS) as (spark, lakehouse):
            faq, generated, test, counts = question_sets(spark, lakehouse)
            results.update(counts, faq_questions=len(faq), generated_questions=len(generated),
                           generated_test_questions=len(test))
            if args.regenerate or not SAVED.is_file():
                cost = generate(spark, lakehouse, settings)
                save(spark, lakehouse, settings, cost)
            else:
                cost = load(spark, lakehouse, settings)
            summaries = spark.table(lakehouse.table(SILVER_SECTION_SUMMARIES.name)).collect()
            written = [q for r in summaries if r.status == "ok" for q in r.questions]
            results["generation"] = cost | {"sections_ok": sum(r.status == "ok" for r in summaries),
                                            "sections_failed": sum(r.status != "ok" for r in summaries),
                                            "questions": len(written)}
            # How many benchmark questions the generator wrote word for word (case and space aside).
            norm = {" ".join(q.lower().split()) for q in written}
            results["verbatim"] = {name: sum(" ".join(q.lower().split()) in norm for q, _ in qs.values())
                                   for name, qs in (("faq", faq), ("generated", generated))}
            print(f"generation: {results['generation']}; benchmark questions written verbatim: {results['verbatim']}")
            chunks = lakehouse.table(SILVER_CHUNKS.name)
            original = (spark.table(chunks).toPandas(), spark.table(chunks).schema)
            without = dataclasses.replace(settings, gold=dataclasses.replace(settings.gold, questions=False))
            for variant in ("context", "withheld"):
                if variant == "withheld":
                    spark.createDataFrame(*original).write.insertInto(chunks, overwrite=True)  # unexpanded
                    withhold_own_heading(spark, lakehouse)
                sets = ({"faq": faq, "generated": generated, "generated_test": test} if variant == "context"
                        else {"faq": faq})
                started = time.perf_counter()
                run_gold(spark, lakehouse, settings)
                table: dict = {}
                vectors: dict = {}
                for label, suffix, chosen in (("without", "", without),
                                              ("question vectors", " + question vectors", settings)):
                    folder = build_index(spark, lakehouse, chosen, Path(root) / f"{variant}-{label}").folder
                    vectors[label] = measure_index(folder, chosen, sets, suffix, variant, table)
                expand_chunks(spark, lakehouse)
                run_gold(spark, lakehouse, without)
                folder = build_index(spark, lakehouse, without, Path(root) / f"{variant}-expanded").folder
                vectors["chunks expanded"] = measure_index(folder, without, sets, " + questions in chunk text",
                                                           variant, table)
                results["variants"][variant] = {"gold_and_indexes_s": round(time.perf_counter() - started, 1),
                                                "vectors": vectors, "configs": table}
    print("columns per set: ndcg@10 recall@1 recall@5 p50_ms")
    write_result("doc2query", results)


if __name__ == "__main__":
    main()
