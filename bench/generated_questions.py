"""Export the generated questions of a lake into bench/data/generated_questions.json.

The retrieval benchmark needs questions written from the sections' bodies by someone other than
the retriever: `lakerag generate-eval-set` (the local LLM) writes them into eval_questions. Each
kept (active) question is saved with its section's file name and heading path, so the benchmark
finds the section again after a parser change alters section ids. How the saved set was made:

    .venv/bin/lakerag ingest-bronze --lake-root /tmp/gen/lake --landing <folder with data/corpus/manuals/*.pdf>
    .venv/bin/lakerag build-silver --lake-root /tmp/gen/lake
    .venv/bin/lakerag generate-eval-set --lake-root /tmp/gen/lake --max-sections 45 --set llm.threads=2
    .venv/bin/python bench/generated_questions.py --lake-root /tmp/gen/lake
"""
from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

import pyspark.sql.functions as F

from lakerag.lakehouse.engine import Lakehouse, spark_session
from lakerag.lakehouse.tables import EVAL_QUESTIONS, SILVER_DOCUMENTS, SILVER_SECTIONS, ensure_tables

OUT = Path(__file__).parent / "data" / "generated_questions.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake-root", required=True)
    parser.add_argument("--catalog", default="lakerag")
    parser.add_argument("--schema", default="dev")
    args = parser.parse_args()
    os.environ.setdefault("RUST_LOG", "error")
    lakehouse = Lakehouse(args.catalog, args.schema, Path(args.lake_root))
    with spark_session("sail", lakehouse) as spark:
        ensure_tables(spark, lakehouse)
        questions = spark.table(lakehouse.table(EVAL_QUESTIONS.name))
        statuses = Counter(r.status for r in questions.select("status").collect())
        reasons = Counter((r.reason or "").split(" (")[0] for r in questions.filter(F.col("status") == "rejected")
                          .select("reason").collect())
        rows = (questions.filter(F.col("status") == "active")
                .join(spark.table(lakehouse.table(SILVER_SECTIONS.name)).select("section_id", "heading_path"),
                      "section_id")
                .join(spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).select("doc_id", "file_name"), "doc_id")
                .orderBy("question_id").collect())
        sections = questions.select("section_id").distinct().count()
    items = [{"question_id": r.question_id, "question": r.question, "reference_answer": r.reference_answer,
              "style": r.style, "split": r.split, "generator": r.generator, "file_name": r.file_name,
              "heading_path": list(r.heading_path)} for r in rows]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"sections": sections, "statuses": dict(statuses), "rejected": dict(reasons),
                               "questions": items}, indent=1, ensure_ascii=False) + "\n")
    splits = Counter(item["split"] for item in items)
    print(f"{sections} sections: {dict(statuses)} (rejected: {dict(reasons)}); kept {len(items)} "
          f"({dict(splits)}) -> {OUT}")


if __name__ == "__main__":
    main()
