"""Benchmark: the fine-tuned embedding model and the trained reranker (`lakerag finetune-embeddings`).

`lakerag finetune-embeddings` trains on the generated eval set's train split. Generating a pair
with the packaged 0.5B LLM takes about a minute on this CPU, so this benchmark stands
heading-derived pairs in for generated ones: each section of the corpus (the Debian FAQ excepted)
with a heading and at least 200 characters gives ("What does the documentation say about
<heading>?", that section). The pairs are split by a hash of the section id: 80% go into
eval_questions as the train split, 20% as the test split (held out). Then, on this machine:
1. bronze -> silver -> gold -> index of data/corpus, as the pipeline does;
2. `run_finetune` (the job `lakerag finetune-embeddings`): the embedding model (in-batch + mined
   hard negatives) and the cross-encoder reranker, timed;
3. `evaluate_finetuned` (the job `lakerag evaluate-finetuned`): section retrieval on the held-out
   pairs and on the Debian FAQ's own questions (a document never trained on), dense cosine over
   the indexed sections with the base (the baseline) vs the fine-tuned model, and the base
   model's top 20 reranked by the trained cross-encoder vs by the configured reranker (rescore
   with all-mpnet-base-v2); and its promotion verdicts.
Prints recall@5 and nDCG@10 (ranx) with 95% bootstrap intervals, each system's paired difference
(with its interval) to what it would replace: the base embedding, or for the trained reranker the
configured one; the verdicts and the training time; writes bench/results/finetune.json.

With `--pairs generated` it trains on real generated questions instead: the ones the local LLM
wrote and the filters kept (bench/data/generated_questions.json), split by section as
`generate-eval-set` splits them (evaluation.test_fraction), so no held-out question's section
was trained on.

    .venv/bin/python bench/finetune.py
    .venv/bin/python bench/finetune.py --set finetune.epochs=3 --result finetune-3-epochs
    .venv/bin/python bench/finetune.py --pairs generated --result finetune-generated
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from common import generated_questions, silver_lakehouse, write_result  # noqa: E402

from lakerag.evaluation.question_sets import split_of  # noqa: E402
from lakerag.finetune.train import run_finetune  # noqa: E402
from lakerag.finetune.gate import RERANKED, TUNED, evaluate_finetuned, table_lines  # noqa: E402
from lakerag.enrich.embeddings import run_gold  # noqa: E402
from lakerag.enrich.index_build import build_index  # noqa: E402
from lakerag.settings import load_settings  # noqa: E402
from lakerag.lakehouse.tables import EVAL_QUESTIONS, SILVER_DOCUMENTS, SILVER_SECTIONS  # noqa: E402
from lakerag.tracking import configure_mlflow, use_experiment  # noqa: E402


def training_and_held_out(sections: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train pairs, held-out pairs) as question_id, question, section_id."""
    usable = sections[(sections["file_name"] != "debian-faq.pdf") & (sections["level"] >= 1)
                      & (sections["text"].str.len() >= 200)]
    pairs = pd.DataFrame({"question_id": "pair-" + usable["section_id"], "section_id": usable["section_id"],
                          "question": "What does the documentation say about " + usable["title"] + "?"})
    held_out = pairs["section_id"].map(lambda s: int(hashlib.sha256(s.encode()).hexdigest()[:8], 16) % 5 == 0)
    return pairs[~held_out], pairs[held_out]


def generated_pairs(sections: list, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train pairs, held-out pairs) from the saved generated questions, split by section."""
    found, _ = generated_questions(sections)
    pairs = pd.DataFrame(found, columns=["question_id", "question", "section_id", "split"])
    held_out = pairs["section_id"].map(lambda s: split_of(s, test_fraction) == "test")
    return pairs[~held_out], pairs[held_out]


def question_rows(pairs: pd.DataFrame, doc_of: dict[str, str], split: str, source: str) -> list[dict]:
    """eval_questions rows for the pairs, as `lakerag generate-eval-set` would write them."""
    now = datetime.now(timezone.utc)
    return [{"question_id": r.question_id, "section_id": r.section_id, "doc_id": doc_of[r.section_id],
             "question": r.question, "reference_answer": "", "style": "factual", "generator": f"bench:{source}",
             "prompt_version": "v1", "seed": 0, "split": split, "status": "active", "reason": None,
             "created_at": now} for r in pairs.itertuples()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="settings override, e.g. finetune.epochs=3 (repeatable; default: conf defaults)")
    parser.add_argument("--pairs", choices=("headings", "generated"), default="headings",
                        help="training questions: heading-derived (default) or the saved generated ones")
    parser.add_argument("--result", default="finetune", help="name of the bench/results/<name>.json to write")
    args = parser.parse_args()
    settings = load_settings(None, args.overrides)
    with tempfile.TemporaryDirectory() as scratch, silver_lakehouse(Path(scratch), settings) as (spark, lakehouse):
        run_gold(spark, lakehouse, settings)
        index = build_index(spark, lakehouse, settings, Path(scratch) / "indexes").folder
        documents = spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).select("doc_id", "file_name")
        rows = (spark.table(lakehouse.table(SILVER_SECTIONS.name))
                .select("section_id", "doc_id", "title", "level", "text", "heading_path").join(documents, "doc_id"))
        sections = rows.drop("heading_path").toPandas()
        sections = sections[sections["section_id"].isin(set(pd.read_parquet(index / "sections.parquet")["section_id"]))]
        train, held_out = (training_and_held_out(sections) if args.pairs == "headings" else
                           generated_pairs(rows.collect(), settings.evaluation.test_fraction))
        doc_of = dict(zip(sections["section_id"], sections["doc_id"]))
        spark.createDataFrame(question_rows(train, doc_of, "train", args.pairs) + question_rows(held_out, doc_of, "test", args.pairs),
                              EVAL_QUESTIONS.schema).write.insertInto(lakehouse.table(EVAL_QUESTIONS.name))
        configure_mlflow(None, None, Path(scratch))
        experiment_id = use_experiment("lakerag-bench-finetune", Path(scratch))
        report = run_finetune(spark, lakehouse, settings, index, Path(scratch) / "finetuned")
        print(f"trained on {report.pairs} pairs: {report.metrics}")
        started = time.perf_counter()
        comparison = evaluate_finetuned(spark, lakehouse, settings, index, experiment_id,
                                        {TUNED: "lakerag_embedding", RERANKED: "lakerag_reranker"}, report.run_id)
        compare_seconds = round(time.perf_counter() - started, 1)
    print(f"\ntraining pairs: {report.pairs} (held out: {len(held_out)}), time: embedding "
          f"{report.metrics['embedding_train_seconds']} s, reranker {report.metrics['reranker_train_seconds']} s; "
          f"comparison {compare_seconds} s")
    results = {}
    for name, table in comparison.tables.items():
        print(f"\n{name} ({comparison.questions[name]} questions)")
        print("\n".join(table_lines(table)))
        # JSON has no NaN: the base's own difference is null
        results[name] = table.round(3).astype(object).where(table.notna(), None).to_dict(orient="records")
    print()
    for system, (better, why) in comparison.verdicts.items():
        print(f"{system}: {'promoted' if better else 'not promoted'}; {why}")
    write_result(args.result, {"overrides": args.overrides, "pair_source": args.pairs, "pairs": report.pairs, "held_out": len(held_out),
                               **report.metrics, "comparison_seconds": compare_seconds,
                               "questions": comparison.questions, "results": results, "verdicts": comparison.verdicts})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
