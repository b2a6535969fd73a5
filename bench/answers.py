"""Benchmark: answers through the whole chain on 40 fixed Debian FAQ questions, per runtime x model.

The Debian FAQ's authors wrote each question (a heading) and its answer (the section below it),
so answers are scored against text nobody here wrote. The pipeline runs on
data/corpus/manuals/debian-faq.pdf (bronze -> silver -> gold -> index; the mpnet reranking vectors
are stored by gold, as a deployment that reranks configures it, so retrieval costs milliseconds
and the figures measure generation). Each configuration answers in its own process (peak RSS is
that process's), with the chain's default settings:

- time to first token and to the whole checked answer, p50/p95 (retrieval included);
- prompt and generated tokens/s (prompt tokens / time to the first token of the LLM call;
  generated tokens / the time after it);
- correctness against the authors' answer, judge-free: the share of the answer's content words
  found in the reference ("precision") and the cosine of answer and reference (MiniLM);
- share of answer sentences verified; share of answers with a verified citation on the authors'
  section and page; share of abstentions.

    .venv/bin/python bench/answers.py                  # all configurations, writes bench/results/answers.json
    .venv/bin/python bench/answers.py --configs llamacpp-1.5b --questions 10 --result answers-try
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import silver_lakehouse, write_result  # noqa: E402

CONFIGS = {
    # name: llm.* overrides
    "transformers-0.5b": {"backend": "transformers", "model": "qwen2.5-coder-0.5b-instruct"},
    "llamacpp-0.5b": {"backend": "llamacpp", "model": "qwen2.5-coder-0.5b-instruct"},
    "llamacpp-1.5b": {"backend": "llamacpp", "model": "qwen2.5-coder-1.5b-instruct"},
    "llamacpp-1.5b+draft-0.5b": {"backend": "llamacpp", "model": "qwen2.5-coder-1.5b-instruct",
                                 "draft_model": "qwen2.5-coder-0.5b-instruct"},
}


SHORT = ("transformers-0.5b", "llamacpp-1.5b+draft-0.5b")


def build(root: Path) -> tuple[Path, list[dict]]:
    """The Debian FAQ's index and its questions: [{question, section_id, text, page_start, page_end}]."""
    import pyspark.sql.functions as F

    from lakerag.enrich.embeddings import run_gold
    from lakerag.enrich.index_build import build_index
    from lakerag.settings import Settings
    from lakerag.lakehouse.tables import SILVER_SECTIONS

    base = Settings()
    settings = dataclasses.replace(base, gold=dataclasses.replace(base.gold, extra_models=(base.models.rerank,)))
    with silver_lakehouse(root, settings, ["debian-faq.pdf"]) as (spark, lakehouse):
        run_gold(spark, lakehouse, settings)
        folder = build_index(spark, lakehouse, settings, root / "indexes").folder
        rows = (spark.table(lakehouse.table(SILVER_SECTIONS.name))
                .filter(F.col("title").endswith("?") & (F.length(F.trim("text")) > 0))
                .select("section_id", "title", "text", "page_start", "page_end").orderBy("section_id").collect())
    questions = [{"question": r.title, "section_id": r.section_id, "text": r.text, "page_start": r.page_start,
                  "page_end": r.page_end} for r in rows]
    return folder, random.Random(0).sample(questions, 40)


class TimedLLM:
    """Wraps an LLM and records, per streamed call, when it started, its first piece and its end."""

    def __init__(self, llm):
        self.llm, self.calls = llm, []

    def __getattr__(self, name):
        return getattr(self.llm, name)

    def stream(self, *args, **kwargs):
        started, first = time.perf_counter(), None
        for piece in self.llm.stream(*args, **kwargs):
            if first is None and isinstance(piece, str):
                first = time.perf_counter()
            if not isinstance(piece, str):
                self.calls.append({"first_s": (first or time.perf_counter()) - started,
                                   "total_s": time.perf_counter() - started,
                                   "prompt_tokens": piece.prompt_tokens, "completion_tokens": piece.completion_tokens})
            yield piece


def child(config: str, folder: Path, questions: list[dict], out: Path, overrides: list[str]) -> None:
    """Answer the questions with one configuration; write per-question records and the peak RSS."""
    from lakerag.chain.rag import RagChain
    from lakerag.retrieval.index_files import bm25_tokens
    from lakerag.chain.llm import make_llm
    from lakerag.retrieval.retriever import Retriever
    from lakerag.settings import Settings, apply_overrides

    base = apply_overrides(Settings(), overrides)
    settings = dataclasses.replace(base, llm=dataclasses.replace(base.llm, **CONFIGS[config]))
    started = time.perf_counter()
    llm = TimedLLM(make_llm(settings.llm))
    retriever = Retriever.from_settings(folder, settings)
    chain = RagChain(retriever, llm, settings.chain)
    chain.answer([{"role": "user", "content": "What is Debian?"}])  # warm-up: loads every model once
    load_s = time.perf_counter() - started
    records = []
    for number, item in enumerate(questions, 1):
        calls_before = len(llm.calls)
        out_ = chain.answer([{"role": "user", "content": item["question"]}])
        call = llm.calls[-1] if len(llm.calls) > calls_before else None
        claims = [s for s in out_["sentences"] if s["claim"]]
        on_page = [c for c in out_["citations"] if c["section_id"] == item["section_id"]
                   and any(item["page_start"] <= q["page"] <= item["page_end"] for q in c["quotes"])]
        words = set(bm25_tokens([out_["draft"]])[0])
        reference_words = set(bm25_tokens([item["text"]])[0])
        vectors = retriever.embed([out_["draft"] or "-", item["text"]])
        records.append({
            "question": item["question"], "answer": out_["answer"], "draft": out_["draft"],
            "abstained": out_["abstained"], "first_token_s": out_["first_token_s"], "latency_s": out_["latency_s"],
            "llm": call, "claims": len(claims), "verified": sum(s["supported"] for s in claims),
            "cited_right_page": bool(on_page),
            "retrieved_right_section": item["section_id"] in out_["retrieved"],
            "word_precision": len(words & reference_words) / len(words) if words else 0.0,
            "similarity": float(vectors[0] @ vectors[1]) if out_["draft"] else 0.0,
        })
        print(f"  {config} {number}/{len(questions)}: {out_['latency_s']:.1f} s, "
              f"{'abstained' if out_['abstained'] else 'answered'}", flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write_text(json.dumps({"load_s": load_s, "peak_rss_mb": peak_mb, "records": records}))


def p(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def summary(data: dict) -> dict:
    """The figures of one configuration."""
    records = data["records"]
    answered = [r for r in records if not r["abstained"]]
    calls = [r["llm"] for r in records if r["llm"]]
    ttft = [r["first_token_s"] for r in records if r["first_token_s"] is not None]
    return {
        "questions": len(records), "load_s": round(data["load_s"], 1), "peak_rss_mb": round(data["peak_rss_mb"]),
        "first_token_p50_s": p(ttft, 50), "first_token_p95_s": p(ttft, 95),
        "answer_p50_s": p([r["latency_s"] for r in records], 50), "answer_p95_s": p([r["latency_s"] for r in records], 95),
        "prompt_tok_s": round(sum(c["prompt_tokens"] for c in calls) / sum(c["first_s"] for c in calls), 1) if calls else None,
        "gen_tok_s": round(sum(c["completion_tokens"] for c in calls)
                           / max(1e-9, sum(c["total_s"] - c["first_s"] for c in calls)), 1) if calls else None,
        "prompt_tokens_mean": round(float(np.mean([c["prompt_tokens"] for c in calls])), 0) if calls else None,
        "abstained": round(1 - len(answered) / len(records), 3),
        "sentences_verified": round(sum(r["verified"] for r in answered) / max(1, sum(r["claims"] for r in answered)), 3),
        "answered_with_right_page": round(np.mean([r["cited_right_page"] for r in answered]), 3) if answered else None,
        "retrieved_right_section": round(float(np.mean([r["retrieved_right_section"] for r in records])), 3),
        "word_precision": round(float(np.mean([r["word_precision"] for r in records])), 3),
        "similarity": round(float(np.mean([r["similarity"] for r in records])), 3),
    }


COLUMNS = [("first_token_p50_s", "1st tok p50"), ("first_token_p95_s", "p95"), ("answer_p50_s", "answer p50"),
           ("answer_p95_s", "p95"), ("prompt_tok_s", "prompt t/s"), ("gen_tok_s", "gen t/s"),
           ("peak_rss_mb", "RSS MB"), ("word_precision", "word prec"), ("similarity", "cosine"),
           ("sentences_verified", "verified"), ("answered_with_right_page", "right page"), ("abstained", "abstain")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--questions", type=int, default=40, help="questions per configuration (of the fixed 40)")
    parser.add_argument("--short-questions", type=int, default=10,
                        help="questions for transformers-0.5b (about 20 s each: the old baseline) and for the "
                             "speculative-decoding configuration (one measurement)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting for every configuration, e.g. chain.context_tokens=300")
    parser.add_argument("--result", default="answers", help="name of the JSON file under bench/results/")
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "INDEX", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        config, folder, spec = args.child
        job = json.loads(Path(spec).read_text())
        child(config, Path(folder), job["questions"], Path(job["out"]), job["overrides"])
        return
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        folder, questions = build(root)
        print(f"index of the Debian FAQ built in {time.perf_counter() - started:.0f} s; {len(questions)} questions")
        results = {"questions": [q["question"] for q in questions], "overrides": args.overrides, "configs": {}}
        for config in args.configs:
            count = min(args.questions, args.short_questions if config in SHORT else args.questions)
            spec, out = root / f"{config}.spec.json", root / f"{config}.out.json"
            spec.write_text(json.dumps({"questions": questions[:count], "out": str(out), "overrides": args.overrides}))
            subprocess.run([sys.executable, __file__, "--child", config, str(folder), str(spec)], check=True)
            data = json.loads(out.read_text())
            results["configs"][config] = {"summary": summary(data), "records": data["records"]}
            print(config, json.dumps(results["configs"][config]["summary"]), flush=True)
    print(f"\n{'configuration':<26}" + "".join(f"{title:>12}" for _, title in COLUMNS))
    for config, result in results["configs"].items():
        figures = result["summary"]
        print(f"{config + ' (' + str(figures['questions']) + ' q)':<26}"
              + "".join(f"{'-' if figures[key] is None else figures[key]:>12}" for key, _ in COLUMNS))
    write_result(args.result, results)


if __name__ == "__main__":
    main()
