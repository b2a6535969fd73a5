"""Benchmark: evaluation that can stop a bad model (issue 19), on the three manuals, with the local LLM.

The whole pipeline (bronze -> silver -> gold with MiniLM and the reranker's mpnet -> index) runs on
data/corpus/manuals' three manuals, then with the packaged LLM (llm.* defaults, 2 threads):
  1. generation: `run_generation` on --sections sections (the seeded order of generate-eval-set):
     pairs written, kept per section, rejection reasons, seconds a section;
  2. the judge's check: on --check-questions Debian FAQ questions, the authors' answer to each
     question (should pass) and to a different question (should fail faithfulness, correctness,
     relevance); accuracy per metric with a 95% bootstrap interval, against the
     evaluation.judge_min_accuracy the gate requires;
  3. judged metrics: the chain (defaults) answers --faq-questions Debian FAQ questions (authors'
     sections as references) and the test split of the questions step 1 kept, through
     `mlflow.genai.evaluate` with the judge; every metric's mean and 95% interval.
Writes bench/results/evaluation.json.

    .venv/bin/python bench/evaluation.py
    .venv/bin/python bench/evaluation.py --sections 4 --check-questions 5 --faq-questions 5 --result evaluation-try
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import silver_lakehouse, write_result  # noqa: E402

from lakerag.chain.llm import make_llm, model_key  # noqa: E402
from lakerag.chain.rag import RagChain  # noqa: E402
from lakerag.enrich.embeddings import run_gold  # noqa: E402
from lakerag.enrich.index_build import build_index  # noqa: E402
from lakerag.evaluation.jobs import load_questions  # noqa: E402
from lakerag.evaluation.judge_check import check_judge  # noqa: E402
from lakerag.evaluation.metrics import Judge, answer_relevance_similarity, summarise_table  # noqa: E402
from lakerag.evaluation.question_sets import run_generation  # noqa: E402
from lakerag.evaluation.scorers import evaluate_chain  # noqa: E402
from lakerag.retrieval.retriever import Retriever  # noqa: E402
from lakerag.settings import Settings  # noqa: E402

MANUALS = ["debian-faq.pdf", "R-intro.pdf", "R-data.pdf"]


def shown(summary) -> dict:
    """mean [low, high] NaN-rate per metric, rounded, for the result file."""
    return {m: {"mean": round(s.mean, 3), "ci": [round(s.ci_low, 3), round(s.ci_high, 3)], "scored": s.scored,
                "nan_rate": round(s.nan_rate, 3)} for m, s in summary.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", type=int, default=12, help="sections to generate questions from")
    parser.add_argument("--check-questions", type=int, default=30, help="Debian FAQ questions for the judge check")
    parser.add_argument("--faq-questions", type=int, default=40, help="Debian FAQ questions answered and judged")
    parser.add_argument("--result", default="evaluation", help="name of the result file in bench/results")
    args = parser.parse_args()
    import mlflow

    base = Settings()
    settings = dataclasses.replace(
        base, gold=dataclasses.replace(base.gold, extra_models=(base.models.rerank,)),
        llm=dataclasses.replace(base.llm, threads=2),
        evaluation=dataclasses.replace(base.evaluation, max_sections=args.sections,
                                       judge_check_questions=args.check_questions))
    config = settings.evaluation
    result: dict = {"llm": model_key(settings), "files": MANUALS}
    with tempfile.TemporaryDirectory() as root, silver_lakehouse(Path(root), settings, MANUALS) as (spark, lakehouse):
        run_gold(spark, lakehouse, settings)
        folder = build_index(spark, lakehouse, settings, Path(root) / "indexes").folder
        mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
        mlflow.set_experiment("bench-evaluation")
        llm = make_llm(settings.llm)

        started = time.perf_counter()
        report = run_generation(spark, lakehouse, settings, llm)
        seconds = time.perf_counter() - started
        kept = report.statuses.get("active", 0)
        result["generation"] = {"sections": report.sections, "written": report.statuses, "reasons": report.reasons,
                                "failed_sections": report.failed_sections,
                                "kept_per_section": round(kept / max(report.sections, 1), 2),
                                "seconds_per_section": round(seconds / max(report.sections, 1), 1)}
        print(f"1. generation: {result['generation']}", flush=True)

        judge = Judge(llm, model_key(settings), config, {})
        similarity = answer_relevance_similarity(settings.models.embedding)
        faq = load_questions(spark, lakehouse, "debian-faq", 0)
        started = time.perf_counter()
        with mlflow.start_run(run_name="check-judge"):
            cases, accuracy = check_judge(judge, similarity, faq.head(args.check_questions), config)
        result["judge_check"] = {"questions": args.check_questions, "cases": len(cases),
                                 "required": config.judge_min_accuracy, "accuracy": shown(accuracy),
                                 "seconds_per_judgment": round((time.perf_counter() - started) / len(cases), 1)}
        print(f"2. judge check: {result['judge_check']}", flush=True)

        chain = RagChain(Retriever.from_settings(folder, settings), llm, settings.chain)
        sets = {"debian-faq": faq.sample(n=min(args.faq_questions, len(faq)), random_state=0),
                "generated test": load_questions(spark, lakehouse, "generated", 0)}
        result["judged"] = {}
        for name, questions in sets.items():
            if questions.empty:
                result["judged"][name] = {"questions": 0}
                continue
            started = time.perf_counter()
            with mlflow.start_run(run_name=f"evaluate-{name}"):
                table = evaluate_chain(lambda rows: [chain.answer(r["messages"]) for r in rows], questions, judge,
                                       similarity, config)
            result["judged"][name] = {"questions": len(questions), "metrics": shown(summarise_table(table, config)),
                                      "seconds_per_question": round((time.perf_counter() - started) / len(table), 1)}
            print(f"3. {name}: {result['judged'][name]}", flush=True)
    result["judge_calls"] = judge.calls
    write_result(args.result, result)
    print("\nstep / set                 metric               mean   95% interval")
    for metric, s in result["judge_check"]["accuracy"].items():
        print(f"judge check ({len(cases)} cases)  {metric:20} {s['mean']:.3f}  {s['ci']}  (required "
              f"{config.judge_min_accuracy} to gate)")
    for name, block in result["judged"].items():
        for metric, s in block.get("metrics", {}).items():
            print(f"{name:26} {metric:20} {s['mean']:.3f}  {s['ci']}  NaN {s['nan_rate']:.0%}")


if __name__ == "__main__":
    main()
