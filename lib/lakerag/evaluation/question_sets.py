"""Generated evaluation sets: question / reference-answer pairs written by the LLM from silver
sections, seeded with a few human examples (as in "Unnatural Instructions"), filtered, and kept
in eval_questions linked to their source section.

Every generated pair is stored: kept pairs are `active`; a pair whose answer is not supported by
its section, or whose question nearly repeats a kept one, is `rejected` with the reason; pairs of
sections that left silver are `retired`, and pairs of documents whose file was deleted are erased
(they quote it). Sections are picked by a seeded hash order within a budget, and a section that
already has pairs from this generator and prompt version is skipped.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession
from tqdm import tqdm

from lakerag.ingest.parse_pool import content_id
from lakerag.lakehouse.engine import Lakehouse
from lakerag.enrich.embeddings import encode
from lakerag.retrieval.index_files import bm25_tokens
from lakerag.chain.llm import LLM, LLMError, make_llm
from lakerag.settings import EvaluationSettings, Settings
from lakerag.chain.llm import MalformedOutput, json_in, model_key
from lakerag.lakehouse.tables import (
    ACTIVE,
    BRONZE_DOCUMENTS,
    BRONZE_QUARANTINE,
    EVAL_QUESTIONS,
    SILVER_SECTIONS,
    merge_into,
)

log = logging.getLogger(__name__)


def pairs_schema(styles: tuple) -> dict:
    """The JSON schema of the generator's answer: one {style, question, answer} per style, bounded
    so that three pairs fit evaluation.max_new_tokens (JSON cut off by the limit is malformed)."""
    item = {"type": "object", "properties": {"style": {"type": "string", "enum": list(styles)},
                                             "question": {"type": "string", "pattern": "^[^\\n]{9,148}[?]$"},
                                             "answer": {"type": "string", "minLength": 10, "maxLength": 250}},
            "required": ["style", "question", "answer"]}
    return {"type": "array", "items": item, "minItems": 1, "maxItems": len(styles)}


def parse_pairs(text: str, styles: tuple) -> list[dict[str, str]]:
    """Model output -> validated [{style, question, answer}]; raises MalformedOutput."""
    pairs = []
    for item in json_in(text, list):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("question", "answer")):
            raise MalformedOutput('each entry must be an object with string "question" and "answer"')
        question, answer = item["question"].strip(), item["answer"].strip()
        if not question.endswith("?") or len(question) < 10 or len(answer) < 10:
            raise MalformedOutput("a question must end with '?' and both texts need 10 characters or more")
        style = item.get("style") if item.get("style") in styles else styles[len(pairs) % len(styles)]
        pairs.append({"style": style, "question": question, "answer": answer})
    if not pairs:
        raise MalformedOutput("the list is empty")
    return pairs


def support(answer: str, section_text: str) -> float:
    """Share of the answer's content words (lower-cased, no stop words) found in the section."""
    words = set(bm25_tokens([answer])[0])
    if not words:
        return 0.0
    return len(words & set(bm25_tokens([section_text])[0])) / len(words)


def generation_messages(config: EvaluationSettings, section: dict[str, Any]) -> list[dict[str, str]]:
    """Seed examples + the section -> the chat messages asking for pairs."""
    examples = "\n".join(json.dumps(dict(example)) for example in config.seed_examples)
    user = config.user_prompt.format(examples=examples, heading_path=" > ".join(section["heading_path"]),
                                     text=section["text"][: config.max_input_chars], count=len(config.styles),
                                     styles=", ".join(config.styles))
    return [{"role": "system", "content": config.system_prompt}, {"role": "user", "content": user}]


def split_of(question_id: str, test_fraction: float) -> str:
    """train | test, stable for an id: the hash decides, not the order of generation."""
    return "test" if int(question_id[:8], 16) / 0xFFFFFFFF < test_fraction else "train"


@dataclass
class EvalSetReport:
    """What one generation run did."""

    statuses: dict[str, int] = field(default_factory=dict)  # active / rejected -> rows written
    failed_sections: int = 0  # the model gave no valid JSON (after one retry) or the backend failed
    retired: int = 0  # pairs of sections that changed (their file is still there)
    erased: int = 0  # pairs of documents whose file was deleted
    waiting: int = 0  # qualifying sections left for later runs
    prompt_tokens: int = 0
    completion_tokens: int = 0


def generate_pairs(llm: LLM, config: EvaluationSettings, section: dict[str, Any],
                   report: EvalSetReport) -> list[dict[str, str]]:
    """One section -> validated pairs (one retry after malformed output), [] on failure."""
    messages = generation_messages(config, section)
    for _ in range(2):
        try:
            reply = llm.chat(messages, max_tokens=config.max_new_tokens, schema=pairs_schema(config.styles))
        except LLMError as err:
            log.warning("section %s: backend failed: %s", section["section_id"], err)
            break
        report.prompt_tokens += reply.prompt_tokens
        report.completion_tokens += reply.completion_tokens
        try:
            return parse_pairs(reply.text, config.styles)
        except MalformedOutput as err:
            messages = messages + [{"role": "assistant", "content": reply.text},
                                   {"role": "user", "content": f"That was not valid ({err}). Answer with the JSON list only."}]
    report.failed_sections += 1
    return []


FEEDBACK = "feedback"  # generator, style and prompt version of questions taken from the chat page


def thumbs_down(experiment_ids: list[str], max_traces: int = 5000) -> list[dict[str, Any]]:
    """Answers given a thumbs-down on the chat page: the latest `user_feedback` assessment of a
    trace is False. One dict per trace: trace_id, question, answer, section_id (the first
    retrieved), comment."""
    import mlflow

    from lakerag.serving.feedback import FEEDBACK_NAME

    found = []
    for trace in mlflow.search_traces(locations=experiment_ids, max_results=max_traces, return_type="list"):
        verdicts = sorted((a for a in trace.info.assessments or [] if a.name == FEEDBACK_NAME),
                          key=lambda a: a.create_time_ms or 0)
        if not verdicts or verdicts[-1].value is not False:
            continue
        chain = next((s for s in trace.data.spans if s.name == "rag chain"), None)
        if chain is None or not (chain.outputs or {}).get("retrieved"):
            continue
        found.append({"trace_id": trace.info.trace_id, "question": chain.inputs["messages"][-1]["content"],
                      "answer": chain.outputs["answer"], "section_id": chain.outputs["retrieved"][0],
                      "comment": verdicts[-1].rationale})
    return found


def candidates_from_feedback(spark: SparkSession, lakehouse: Lakehouse, feedback: list[dict[str, Any]],
                             run_time: datetime | None = None) -> int:
    """Thumbs-down answers (`thumbs_down`) -> eval_questions rows with status `candidate`, for a
    person to review (write the reference answer, then set status `active`); once per trace.
    Returns how many were added. The section is the answer's first source (one still in silver);
    its reason quotes the answer and the comment."""
    run_time = run_time or datetime.now(timezone.utc)
    table = lakehouse.table(EVAL_QUESTIONS.name)
    if not feedback:
        return 0
    given = spark.createDataFrame(feedback, "trace_id string, question string, answer string, section_id string, "
                                            "comment string")
    rows = given.join(spark.table(lakehouse.table(SILVER_SECTIONS.name)).select("section_id", "doc_id"),
                      "section_id").select(
        F.sha2(F.concat(F.lit("feedback:"), "trace_id"), 256).substr(1, 32).alias("question_id"),
        "section_id", "doc_id", "question", F.lit("").alias("reference_answer"), F.lit(FEEDBACK).alias("style"),
        F.lit(FEEDBACK).alias("generator"), F.lit(FEEDBACK).alias("prompt_version"), F.lit(0).alias("seed"),
        F.lit("test").alias("split"), F.lit("candidate").alias("status"),
        F.concat(F.lit("thumbs down on: "), F.substring("answer", 1, 300),
                 F.coalesce(F.concat(F.lit(" | comment: "), "comment"), F.lit(""))).alias("reason"),
        F.lit(run_time).cast("timestamp").alias("created_at"))
    new = rows.join(spark.table(table).select("question_id"), "question_id", "left_anti")
    added = new.count()
    if added:
        merge_into(spark, table, new, EVAL_QUESTIONS.key)
    return added


def present_documents(spark: SparkSession, lakehouse: Lakehouse) -> DataFrame:
    """doc_id of every version of a file still in the landing folder (its current version may be
    a document or a quarantined file, e.g. a truncated upload)."""
    bronze = spark.table(lakehouse.table(BRONZE_DOCUMENTS.name))
    present_paths = (bronze.filter(F.col("status") == ACTIVE).select("source_path")
                     .unionByName(spark.table(lakehouse.table(BRONZE_QUARANTINE.name))
                                  .filter(F.col("status") == ACTIVE).select("source_path")))
    return bronze.join(present_paths, "source_path", "left_semi").select("doc_id").distinct()


def run_generation(spark: SparkSession, lakehouse: Lakehouse, settings: Settings, llm: LLM | None = None,
                   run_time: datetime | None = None) -> EvalSetReport:
    """Generate pairs for the sections the budget admits; retire pairs of vanished sections and
    erase those of deleted files."""
    run_time = run_time or datetime.now(timezone.utc)
    config, generator = settings.evaluation, model_key(settings)
    table = lakehouse.table(EVAL_QUESTIONS.name)
    sections = spark.table(lakehouse.table(SILVER_SECTIONS.name))
    existing = spark.table(table)
    report = EvalSetReport()
    # Pairs quote their document: when its file left the landing folder they are erased, not kept.
    erased = [(r.question_id,) for r in existing.join(present_documents(spark, lakehouse), "doc_id", "left_anti")
              .select("question_id").collect()]
    report.erased = len(erased)
    if erased:
        merge_into(spark, table, spark.createDataFrame(erased, "question_id string"), EVAL_QUESTIONS.key,
                   matched="DELETE", insert=False)
        existing = spark.table(table)
    vanished = (spark.table(table).filter(F.col("status") != "retired")
                .join(sections.select("section_id"), "section_id", "left_anti").select("question_id"))
    report.retired = vanished.count()
    if report.retired:
        merge_into(spark, table, vanished, EVAL_QUESTIONS.key, matched="UPDATE SET status = 'retired'", insert=False)
    done = existing.filter((F.col("generator") == generator) & (F.col("prompt_version") == config.prompt_version)
                           & (F.col("seed") == config.seed)).select("section_id").distinct()
    todo = (sections.filter(F.length("text") >= config.min_chars).join(done, "section_id", "left_anti")
            .withColumn("_order", F.sha2(F.concat(F.lit(str(config.seed)), F.col("section_id")), 256))
            .orderBy("_order"))
    waiting = todo.count()
    batch = [row.asDict() for row in (todo.limit(config.max_sections) if config.max_sections else todo).collect()]
    report.waiting = waiting - len(batch)
    if not batch:
        return report
    llm = llm or make_llm(settings.llm)
    kept_questions = [r.question for r in existing.filter(F.col("status") == "active").select("question").collect()]
    kept_vectors = encode(kept_questions, settings.models.embedding, 64) if kept_questions else None
    rows = []
    for section in tqdm(batch, desc="eval questions", unit="section", disable=None):
        for position, pair in enumerate(generate_pairs(llm, config, section, report)):
            question_id = content_id(section["section_id"], generator, config.prompt_version, str(config.seed),
                                     str(position))
            status, reason = "active", None
            supported = support(pair["answer"], section["text"])
            vector = encode([pair["question"]], settings.models.embedding, 1)
            closest = float((kept_vectors @ vector[0]).max()) if kept_vectors is not None else 0.0
            if supported < config.min_support:
                status, reason = "rejected", f"unsupported (support {supported:.2f})"
            elif closest >= config.max_similarity:
                status, reason = "rejected", f"duplicate (similarity {closest:.2f})"
            else:
                kept_vectors = vector if kept_vectors is None else np.vstack([kept_vectors, vector])
            rows.append({"question_id": question_id, "section_id": section["section_id"], "doc_id": section["doc_id"],
                         "question": pair["question"], "reference_answer": pair["answer"], "style": pair["style"],
                         "generator": generator, "prompt_version": config.prompt_version, "seed": config.seed,
                         "split": split_of(question_id, config.test_fraction), "status": status, "reason": reason,
                         "created_at": run_time})
            report.statuses[status] = report.statuses.get(status, 0) + 1
    if rows:
        merge_into(spark, table, spark.createDataFrame(rows, EVAL_QUESTIONS.schema), EVAL_QUESTIONS.key)
    return report
