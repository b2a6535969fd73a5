"""Benchmark: retrieval that follows the documents' own links (issue 22), off against on.

The pipeline (bronze -> silver -> gold with MiniLM and the reranker's mpnet -> index, product
defaults) runs on the three manuals of data/corpus/manuals. Then:
  edges      per document: links and text references resolved to a section, references that
             name no section, and parent/next edges (silver_section_links)
  pairs      questions that need a section and the section it refers to
             (bench/data/graph_questions.json, written by hand from linked pairs): both@5 (both
             sections in the top 5), recall@5 and nDCG@10 with both sections relevant, for the
             graph off and for a sweep of retrieval.graph_* settings
  faq        the Debian FAQ's own questions (one section each): the graph's cost on questions
             that need one section, same configurations
  generated  the saved generated questions (bench/data/generated_questions.json, one section
             each, written from the body), same configurations
  body       the FAQ questions again on an index whose chunks do not see their own section's
             heading (bench/retrieval_quality.py's withheld mode): graph off and on
  context    the chain's retrieval (chain.k sections, plus chain.follow_links sections the best
             hit refers to) and its passages within chain.context_tokens (the default LLM's
             tokenizer), graph off and on: the share of questions with every relevant section
             retrieved and in the prompt, and the relevant sections' tokens in the prompt
  latency    at --size chunks (the index grown as in bench/retrieval.py, the real links kept):
             p50 of hybrid + rerank with the graph off and on (taking turns per query), the
             median per-query difference, and the graph step alone
Writes bench/results/graph.json.

    .venv/bin/python bench/graph.py [--size 100000] [--queries 100]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyspark.sql.functions as F
from ranx import Qrels, Run, evaluate

sys.path.insert(0, str(Path(__file__).parent))
from common import REPO, generated_questions, grown_index, section_key, silver_lakehouse, write_result  # noqa: E402
from retrieval_quality import withhold_own_heading  # noqa: E402

import mlflow  # noqa: E402

from lakerag.chain.llm import make_llm  # noqa: E402
from lakerag.chain.rag import RagChain, Usage, select_passages  # noqa: E402
from lakerag.enrich.embeddings import run_gold  # noqa: E402
from lakerag.enrich.index_build import build_index  # noqa: E402
from lakerag.lakehouse.tables import SILVER_DOCUMENTS, SILVER_SECTION_LINKS, SILVER_SECTIONS  # noqa: E402
from lakerag.retrieval.index_files import bm25_tokens  # noqa: E402
from lakerag.retrieval.retriever import Filters, Retriever  # noqa: E402
from lakerag.settings import Settings  # noqa: E402

MANUALS = ["debian-faq.pdf", "R-intro.pdf", "R-data.pdf"]
QUESTIONS = REPO / "bench" / "data" / "graph_questions.json"
CROSS = ("link", "reference")
# name -> retrieval.* overrides (graph off first: the baseline)
CONFIGS: dict[str, dict] = {
    "graph off (default before issue 22)": {},
    "link+reference, seeds 3, damping 0.8": {"graph_edges": CROSS},
    "link+reference, seeds 1, damping 0.8": {"graph_edges": CROSS, "graph_seeds": 1},
    "link+reference, seeds 3, damping 0.6": {"graph_edges": CROSS, "graph_damping": 0.6},
    "link+reference, seeds 3, damping 0.9": {"graph_edges": CROSS, "graph_damping": 0.9},
    "link+reference, seeds 1, damping 0.95": {"graph_edges": CROSS, "graph_seeds": 1, "graph_damping": 0.95},
    "link+reference, 2 hops, damping 0.8": {"graph_edges": CROSS, "graph_hops": 2},
    "all edges (+parent, next), damping 0.8": {"graph_edges": ("link", "reference", "parent", "next")},
}


def edge_counts(spark, lakehouse) -> dict[str, dict[str, int]]:
    """file -> {link, reference (resolved), unresolved, parent, next}."""
    links = spark.table(lakehouse.table(SILVER_SECTION_LINKS.name)).join(
        spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).select("doc_id", "file_name"), "doc_id")
    rows = (links.withColumn("what", F.when(F.col("to_section_id").isNull(), F.lit("unresolved")).otherwise(F.col("kind")))
            .groupBy("file_name", "what").agg(F.count("*").alias("n")).collect())
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row.file_name, {})[row.what] = row.n
    return counts


def pair_questions(spark, lakehouse) -> tuple[dict[str, tuple[str, str, str]], int]:
    """{qid: (question, referring section, referred section)} and how many matched no section."""
    sections = (spark.table(lakehouse.table(SILVER_SECTIONS.name))
                .join(spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).select("doc_id", "file_name"), "doc_id")
                .select("section_id", "file_name", "heading_path").collect())
    by_key = {section_key(r.file_name, list(r.heading_path)): r.section_id for r in sections}
    found, unmatched = {}, 0
    for item in json.loads(QUESTIONS.read_text())["questions"]:
        ends = [by_key.get(section_key(item["file_name"], item[f"{end}_heading_path"])) for end in ("from", "to")]
        if None in ends:
            unmatched += 1
            continue
        found[item["question_id"]] = (item["question"], *ends)
    return found, unmatched


def single_section_questions(spark, lakehouse) -> tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str]]]:
    """The Debian FAQ's questions (section headings ending in '?') and the saved generated
    questions, each {qid: (question, its section)}."""
    rows = (spark.table(lakehouse.table(SILVER_SECTIONS.name))
            .join(spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).select("doc_id", "file_name"), "doc_id")
            .select("section_id", "file_name", "heading_path", "title", "text").collect())
    faq = {f"faq:{r.section_id}": (r.title, r.section_id) for r in rows
           if r.file_name == "debian-faq.pdf" and r.title.endswith("?") and r.text.strip()}
    found, _ = generated_questions(rows)
    return faq, {f"gen:{q['question_id']}": (q["question"], q["section_id"]) for q in found}


def ranked(retriever: Retriever, questions: dict, depth: int = 10) -> tuple[dict, list[float]]:
    """ranx run {qid: {section: score}} of the top `depth` sections, and each search's ms."""
    run, took = {}, []
    for qid, (question, *_) in questions.items():
        started = time.perf_counter()
        hits = retriever.search(question, k=depth)
        took.append((time.perf_counter() - started) * 1000)
        run[qid] = {hit.section_id: float(depth - rank) for rank, hit in enumerate(hits)} or {"none": 0.0}
    return run, took


def pair_figures(retriever: Retriever, pairs: dict) -> dict:
    run, took = ranked(retriever, pairs)
    qrels = {qid: {source: 1, target: 1} for qid, (_, source, target) in pairs.items()}
    scores = evaluate(Qrels(qrels), Run(run), ["ndcg@10", "recall@5"])
    top5 = {qid: sorted(run[qid], key=lambda s: -run[qid][s])[:5] for qid in run}
    both = statistics.mean(float(source in top5[qid] and target in top5[qid]) for qid, (_, source, target) in pairs.items())
    referred = statistics.mean(float(target in top5[qid]) for qid, (_, _, target) in pairs.items())
    return {"both@5": round(both, 3), "referred@5": round(referred, 3),
            **{m: round(float(v), 3) for m, v in scores.items()}, "p50_ms": round(statistics.median(took), 1)}


def single_figures(retriever: Retriever, faq: dict) -> dict:
    """nDCG@10, recall@1, recall@5 and p50 of questions with one relevant section each."""
    run, took = ranked(retriever, faq)
    scores = evaluate(Qrels({qid: {section: 1} for qid, (_, section) in faq.items()}), Run(run),
                      ["ndcg@10", "recall@1", "recall@5"])
    return {**{m: round(float(v), 3) for m, v in scores.items()}, "p50_ms": round(statistics.median(took), 1)}


def context_figures(chain: RagChain, questions: dict) -> dict:
    """What the chain's prompt gets (its retrieval, then passages within chain.context_tokens by
    the LLM's tokenizer): the share of questions with every relevant section among the sources
    retrieved and among those that got a passage, and the relevant sections' tokens in the prompt."""
    retrieved, prompted, tokens = [], [], []
    for question, *relevant in questions.values():
        hits, _ = chain.retrieve(question, Filters(), Usage())
        passages = select_passages(hits, chain.settings.context_tokens, chain.count_tokens)
        retrieved.append(float(set(relevant) <= {hit.section_id for hit in hits}))
        prompted.append(float(set(relevant) <= {p.hit.section_id for p in passages}))
        tokens.append(sum(chain.count_tokens(p.text()) for p in passages if p.hit.section_id in relevant))
    return {"all_retrieved": round(statistics.mean(retrieved), 3), "all_in_prompt": round(statistics.mean(prompted), 3),
            "relevant_prompt_tokens": round(statistics.mean(tokens), 1)}


def figure_line(figures: dict[str, dict]) -> str:
    """{set: {metric: value}} as one printed line: "set metric value ...   set ..."."""
    return "   ".join(f"{name} " + " ".join(f"{k} {v}" for k, v in values.items()) for name, values in figures.items())


def latency(seed: Path, root: Path, size: int, queries: list[str], settings: Settings) -> dict:
    """p50 ms of hybrid + rerank, graph off and on, and of the graph step alone, at `size` rows."""
    folder, _ = grown_index(seed, root / "big" / "v0", size, settings)
    off = Retriever(folder, dataclasses.replace(settings.retrieval, graph_edges=()), settings.models.rerank)
    on = Retriever(folder, dataclasses.replace(settings.retrieval, graph_edges=CROSS), settings.models.rerank)
    for query in queries[:5]:  # load models, warm caches
        off.search(query), on.search(query)
    figures: dict = {"chunks": size, "queries": len(queries), "links": len(on.graph or [])}
    # off and on take turns going first on each query, so drift in the machine's speed falls on
    # both alike; the paired difference is the graph's cost as one search sees it
    took: dict[str, list[float]] = {"off": [], "on": []}
    for i, query in enumerate(queries):
        for name in ("off", "on") if i % 2 == 0 else ("on", "off"):
            started = time.perf_counter()
            (off if name == "off" else on).search(query, k=5)
            took[name].append((time.perf_counter() - started) * 1000)
    figures["hybrid+rerank, graph off"] = round(statistics.median(took["off"]), 2)
    figures["hybrid+rerank, graph on"] = round(statistics.median(took["on"]), 2)
    figures["paired difference (on - off)"] = round(statistics.median(
        b - a for a, b in zip(took["off"], took["on"])), 2)
    # the graph step alone, on the rankings the search itself produces before it
    steps = []
    for query in queries:
        vector = on.embed_query(query)
        ranking = on.rerank(query, on.fuse(on.dense_ranking(vector, 50, None), on.bm25_ranking(query, 50, None),
                                           vector[0], bm25_tokens([query])[0]))
        started = time.perf_counter()
        on.graph_ranking(ranking, None)
        steps.append((time.perf_counter() - started) * 1000)
    figures["graph step alone"] = round(statistics.median(steps), 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000, help="chunks for the latency figures (%(default)s)")
    parser.add_argument("--queries", type=int, default=100, help="queries for the latency figures (%(default)s)")
    args = parser.parse_args()
    base = Settings()
    settings = dataclasses.replace(base, gold=dataclasses.replace(base.gold, extra_models=(base.models.rerank,)))
    off = dataclasses.replace(settings.retrieval, graph_edges=())
    on = dataclasses.replace(settings.retrieval, graph_edges=CROSS)  # seeds, damping, hops: the defaults
    results: dict = {"files": MANUALS}  # every configuration below names its graph settings
    with tempfile.TemporaryDirectory() as root:
        with silver_lakehouse(Path(root), settings, MANUALS) as (spark, lakehouse):
            results["edges"] = edge_counts(spark, lakehouse)
            for file_name, counts in sorted(results["edges"].items()):
                print(f"{file_name:<16} " + "  ".join(f"{kind} {n}" for kind, n in sorted(counts.items())))
            pairs, unmatched = pair_questions(spark, lakehouse)
            faq, generated = single_section_questions(spark, lakehouse)
            results.update(pair_questions=len(pairs), pair_questions_unmatched=unmatched, faq_questions=len(faq),
                           generated_questions=len(generated))
            print(f"{len(pairs)} pair questions ({unmatched} matched no section), {len(faq)} Debian FAQ questions, "
                  f"{len(generated)} generated questions")
            run_gold(spark, lakehouse, settings)
            seed = build_index(spark, lakehouse, settings, Path(root) / "indexes").folder
            results["configs"] = {}
            for name, overrides in CONFIGS.items():
                retriever = Retriever(seed, dataclasses.replace(off, **overrides), settings.models.rerank)
                figures = {"pairs": pair_figures(retriever, pairs), "faq": single_figures(retriever, faq),
                           "generated": single_figures(retriever, generated)}
                results["configs"][name] = figures
                print(f"{name:<42} {figure_line(figures)}", flush=True)
            results["context"] = {}
            mlflow.tracing.disable()  # the chain's spans are not what is measured here
            llm = make_llm(settings.llm)  # its tokenizer fills the context budget, as in the chain
            for graph_name, retrieval in (("graph off", off), ("graph on", on)):
                retriever = Retriever(seed, retrieval, settings.models.rerank)
                for n in (0, 1, 2):
                    chain = RagChain(retriever, llm, dataclasses.replace(settings.chain, follow_links=n))
                    name = f"{graph_name}, chain.k {settings.chain.k} + follow_links {n}"
                    results["context"][name] = {set_name: context_figures(chain, questions) for set_name, questions
                                                in (("pairs", pairs), ("faq", faq), ("generated", generated))}
                    print(f"context, {name}: {figure_line(results['context'][name])}", flush=True)
            withhold_own_heading(spark, lakehouse)
            run_gold(spark, lakehouse, settings)
            withheld = build_index(spark, lakehouse, settings, Path(root) / "withheld").folder
            results["body"] = {name: single_figures(Retriever(withheld, retrieval, settings.models.rerank), faq)
                               for name, retrieval in (("graph off", off), ("graph on", on))}
            for name, figures in results["body"].items():
                print(f"faq, own heading withheld, {name}: " + " ".join(f"{k} {v}" for k, v in figures.items()))
        queries = [question for question, _ in faq.values()]
        results["latency"] = latency(seed, Path(root), args.size, (queries * (args.queries // len(queries) + 1))
                                     [: args.queries], settings)
        print("latency at %(chunks)d chunks (p50 ms): " % results["latency"]
              + ", ".join(f"{k} {v}" for k, v in results["latency"].items() if k not in ("chunks", "queries")))
    write_result("graph", results)


if __name__ == "__main__":
    main()
