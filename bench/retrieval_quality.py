"""Benchmark: retrieval quality, from the PDFs, on two question sets, with each step of issue 18.

The whole pipeline (bronze -> silver -> gold with MiniLM and the reranker's mpnet -> index) runs
on the three manuals of data/corpus/manuals (606 section chunks), once per text form of the index:
  plain      each chunk's text alone (before issue 18)
  context    "document title > heading path" on a first line above the text (the product default)
  withheld   as context, but each chunk's heading path stops before its own section's heading
             (a benchmark mode, not a product setting: it measures retrieval of the body)
Question sets, each question with one relevant section:
  faq        the Debian FAQ's own questions: its authors wrote each question as the heading of
             the section that answers it (so "context" sees the question's words in its heading)
  generated  the questions the local LLM wrote from 45 sections of the three manuals and the
             filters kept (bench/data/generated_questions.json, written by `lakerag
             generate-eval-set`: 51 questions); generated_test is its test split (22). They are
             written from the body, so no mode withholds anything from them
Configurations (query time, same index; each text form is indexed twice, with and without the
BM25 stemmer): the retrievers alone, the pre-issue-18 defaults (equal reciprocal rank fusion,
mpnet rescoring alone, BM25 not stemmed), BM25 without stemming, and the weighted/normalised fusions and
blended rescoring of retrieval.* with sweeps of bm25_weight, rerank_candidates and
rerank_first_stage_weight. Prints nDCG@10, recall@1,
recall@5 (ranx) and the p50 of a search; writes bench/results/retrieval_quality.json.

    .venv/bin/python bench/retrieval_quality.py
    .venv/bin/python bench/retrieval_quality.py --files debian-faq.pdf --variants plain   # one PDF
    .venv/bin/python bench/retrieval_quality.py --variants context withheld \
        --embedding all-mpnet-base-v2 --rerank-model all-MiniLM-L6-v2 --result retrieval_quality_mpnet
(--embedding/--rerank-model swap the models; the printed "mpnet" labels then mean the rescoring model.)
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyspark.sql.functions as F
from ranx import Qrels, Run, evaluate

sys.path.insert(0, str(Path(__file__).parent))
from common import generated_questions, silver_lakehouse, write_result  # noqa: E402

from lakerag.enrich.embeddings import run_gold  # noqa: E402
from lakerag.enrich.index_build import build_index  # noqa: E402
from lakerag.lakehouse.tables import GOLD_EMBEDDINGS, SILVER_CHUNKS, SILVER_DOCUMENTS, SILVER_SECTIONS  # noqa: E402
from lakerag.retrieval.retriever import Retriever  # noqa: E402
from lakerag.settings import Settings  # noqa: E402

METRICS = ["ndcg@10", "recall@1", "recall@5"]
DEPTH = 10
MANUALS = ["debian-faq.pdf", "R-intro.pdf", "R-data.pdf"]
VARIANTS = ("plain", "context", "withheld")
# pre-issue-18 defaults (BM25 not stemmed)
BEFORE = {"fusion": "rrf", "bm25_weight": 1.0, "rerank_first_stage_weight": 0.0, "bm25_stemmer": ""}
UNSTEMMED = {"bm25_stemmer": ""}
# name -> (mode, rerank, retrieval.* overrides); a bm25_stemmer override runs on an index built with it
CONFIGS: dict[str, tuple[str, bool, dict]] = {
    "bm25": ("bm25", False, {}),
    "dense": ("dense", False, {}),
    "dense + rescore (mpnet alone)": ("dense", True, {"rerank_first_stage_weight": 0.0}),
    "hybrid rrf equal (before)": ("hybrid", False, BEFORE),
    "hybrid rrf equal + rescore mpnet alone (before default)": ("hybrid", True, BEFORE),
    "hybrid rrf bm25 0.3": ("hybrid", False, {"fusion": "rrf", "bm25_weight": 0.3}),
    **{f"hybrid zscore bm25 {w}": ("hybrid", False, {"bm25_weight": w}) for w in (0.1, 0.3, 0.5, 1.0)},
    "hybrid zscore bm25 0.3 + rescore mpnet alone": ("hybrid", True, {"rerank_first_stage_weight": 0.0}),
    **{f"hybrid zscore bm25 {w} + rescore blended": ("hybrid", True, {"bm25_weight": w}) for w in (0.1, 0.3, 0.5, 1.0)},
    # the default's other two knobs: how many candidates are rescored, and the first stage's weight
    **{f"hybrid zscore bm25 0.3 + rescore blended top {n}": ("hybrid", True, {"rerank_candidates": n})
       for n in (10, 30, 50)},
    **{f"hybrid zscore bm25 0.3 + rescore blended first stage {w}": ("hybrid", True, {"rerank_first_stage_weight": w})
       for w in (0.5, 2.0)},
    # the BM25 index and its queries without the Snowball stemmer (the default before stop 38)
    "bm25 (not stemmed)": ("bm25", False, UNSTEMMED),
    "hybrid zscore bm25 0.3 (not stemmed)": ("hybrid", False, UNSTEMMED),
    "hybrid zscore bm25 0.3 + rescore blended (not stemmed)": ("hybrid", True, UNSTEMMED),
}


def question_sets(spark, lakehouse) -> tuple[dict, dict, dict, dict[str, int]]:
    """The FAQ set, the generated set and its test split as {qid: (question, section_id)}, and
    how many generated questions could not be matched to a section."""
    sections = (spark.table(lakehouse.table(SILVER_SECTIONS.name))
                .join(spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).select("doc_id", "file_name"), "doc_id"))
    rows = sections.select("section_id", "file_name", "heading_path", "title", "text").collect()
    faq = {f"faq:{r.section_id}": (r.title, r.section_id) for r in rows
           if r.file_name == "debian-faq.pdf" and r.title.endswith("?") and r.text.strip()}
    found, unmatched = generated_questions(rows)
    generated = {f"gen:{q['question_id']}": (q["question"], q["section_id"]) for q in found}
    test = {f"gen:{q['question_id']}": (q["question"], q["section_id"]) for q in found if q["split"] == "test"}
    return faq, generated, test, {"generated_unmatched": unmatched}


def withhold_own_heading(spark, lakehouse) -> None:
    """Cut each silver chunk's heading path before its own section's heading (benchmark mode),
    and empty gold: the chunk ids stay the same, so gold would keep the vectors with headings."""
    name = lakehouse.table(SILVER_CHUNKS.name)
    schema = spark.table(name).schema
    cut = spark.table(name).withColumn("heading_path", F.slice("heading_path", 1, F.size("heading_path") - 1))
    spark.createDataFrame(cut.toPandas(), schema).write.insertInto(name, overwrite=True)
    gold = lakehouse.table(GOLD_EMBEDDINGS.name)
    spark.createDataFrame([], spark.table(gold).schema).write.insertInto(gold, overwrite=True)


def measure(retriever: Retriever, questions: dict[str, tuple[str, str]], mode: str, rerank: bool) -> dict:
    """nDCG@10, recall@1, recall@5 and p50 ms of `questions` ({qid: (question, section_id)})."""
    run, took = {}, []
    for qid, (question, _) in questions.items():
        started = time.perf_counter()
        hits = retriever.search(question, k=DEPTH, mode=mode, rerank=rerank)
        took.append((time.perf_counter() - started) * 1000)
        run[qid] = {hit.section_id: float(DEPTH - rank) for rank, hit in enumerate(hits)} or {"none": 0.0}
    scores = evaluate(Qrels({qid: {section: 1} for qid, (_, section) in questions.items()}), Run(run), METRICS)
    return {**{metric: round(float(value), 3) for metric, value in scores.items()},
            "p50_ms": round(statistics.median(took), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", nargs="+", default=MANUALS, help="PDFs of data/corpus to index")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--result", default="retrieval_quality", help="name of the result file in bench/results")
    parser.add_argument("--embedding", help="first-stage model (models.embedding; default from conf)")
    parser.add_argument("--rerank-model", help="rescoring model (models.rerank; default from conf)")
    args = parser.parse_args()
    base = Settings()
    base = dataclasses.replace(base, models=dataclasses.replace(
        base.models, embedding=args.embedding or base.models.embedding, rerank=args.rerank_model or base.models.rerank))
    results: dict = {"files": args.files, "embedding": base.models.embedding, "rerank_model": base.models.rerank,
                     "variants": {}}
    with tempfile.TemporaryDirectory() as root:
        with silver_lakehouse(Path(root), base, args.files) as (spark, lakehouse):
            faq, generated, test, counts = question_sets(spark, lakehouse)
            results.update(counts, faq_questions=len(faq), generated_questions=len(generated),
                           generated_test_questions=len(test))
            print(f"{len(faq)} Debian FAQ questions, {len(generated)} generated questions ({len(test)} of the test "
                  f"split; {counts['generated_unmatched']} not matched to a section)")
            for variant in sorted(args.variants, key=VARIANTS.index):  # withheld last: it edits silver
                settings = dataclasses.replace(base, gold=dataclasses.replace(
                    base.gold, extra_models=(base.models.rerank,), contextual_text=variant != "plain"))
                if variant == "withheld":
                    withhold_own_heading(spark, lakehouse)
                started = time.perf_counter()
                run_gold(spark, lakehouse, settings)
                folders = {stemmer: build_index(spark, lakehouse, dataclasses.replace(settings, retrieval=dataclasses.replace(
                    settings.retrieval, bm25_stemmer=stemmer)), Path(root) / "indexes" / f"{variant}-{stemmer or 'none'}").folder
                    for stemmer in dict.fromkeys((settings.retrieval.bm25_stemmer, ""))}
                build_s = time.perf_counter() - started
                sets = ({"faq": faq, "generated": generated, "generated_test": test} if variant != "withheld"
                        else {"faq": faq})
                table: dict = {}
                for name, (mode, rerank, overrides) in CONFIGS.items():
                    # issue 18's steps, without the graph (bench/graph.py measures that step)
                    stemmer = overrides.get("bm25_stemmer", settings.retrieval.bm25_stemmer)
                    retriever = Retriever(folders[stemmer], dataclasses.replace(settings.retrieval, graph_edges=(), **overrides),
                                          settings.models.rerank)
                    table[name] = {set_name: measure(retriever, questions, mode, rerank)
                                   for set_name, questions in sets.items() if questions}
                    print(f"{variant:<8} {name:<64} " + "   ".join(
                        f"{set_name} " + " ".join(f"{value}" for value in figures.values())
                        for set_name, figures in table[name].items()), flush=True)
                results["variants"][variant] = {"gold_and_index_s": round(build_s, 1),
                                                "vectors": retriever.manifest["vectors"], "configs": table}
    print("columns per set: " + " ".join(METRICS) + " p50_ms")
    write_result(args.result, results)


if __name__ == "__main__":
    main()
