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
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession

from lakerag.ingest.parse_pool import content_id
from lakerag.lakehouse.engine import Lakehouse
from lakerag.retrieval.encoders import torch_encode
from lakerag.retrieval.index_files import bm25_tokens
from lakerag.chain.llm import LLM, LLMError, make_llm
from lakerag.settings import EvaluationSettings, Settings
from lakerag.chain.llm import MalformedOutput, json_in, model_key
from lakerag.lakehouse.tables import (
    ACTIVE,
    BRONZE_DOCUMENTS,
    BRONZE_QUARANTINE,
    EVAL_QUESTIONS,
    SILVER_DOCUMENTS,
    SILVER_SECTIONS,
    merge_into,
    sync_column,
)

log = logging.getLogger(__name__)
FLUSH_ROWS = 60  # generated rows kept in memory before they are written


def pair_schema() -> dict:
    """The JSON schema of one {question, answer}, bounded so that it fits evaluation.max_new_tokens
    (JSON cut off by the limit is malformed)."""
    return {"type": "object", "properties": {"question": {"type": "string", "pattern": "^[^\\n]{9,148}[?]$"},
                                             "answer": {"type": "string", "minLength": 10, "maxLength": 250}},
            "required": ["question", "answer"]}


def parse_pair(text: str) -> dict[str, str]:
    """Model output -> validated {question, answer}; raises MalformedOutput."""
    item = json_in(text, dict)
    if not all(isinstance(item.get(k), str) for k in ("question", "answer")):
        raise MalformedOutput('the object needs string "question" and "answer"')
    question, answer = item["question"].strip(), item["answer"].strip()
    if not question.endswith("?") or len(question) < 10 or len(answer) < 10:
        raise MalformedOutput("a question must end with '?' and both texts need 10 characters or more")
    return {"question": question, "answer": answer}


def passages(text: str, config: EvaluationSettings) -> list[str]:
    """A section cut into the passages one question each is written from: one per
    evaluation.passage_chars characters, within questions_min..questions_max, of whole sentences
    (of words when it has fewer sentences than passages) and about equal lengths, so that each
    question is about another part of it."""
    text = text[: config.max_input_chars].strip()
    count = max(config.questions_min, min(config.questions_max, round(len(text) / config.passage_chars)))
    pieces = re.split(r"(?<=[.!?])\s+", text)
    if len(pieces) < count:
        pieces = text.split()
    groups: list[str] = []
    current: list[str] = []
    length = 0
    for piece in pieces:
        current.append(piece)
        length += len(piece) + 1
        if len(groups) < count - 1 and length >= len(text) * (len(groups) + 1) / count:
            groups.append(" ".join(current))
            current = []
    if current:
        groups.append(" ".join(current))
    return groups


def support(answer: str, section_text: str) -> float:
    """Share of the answer's content words (lower-cased, no stop words) found in the section."""
    words = set(bm25_tokens([answer])[0])
    if not words:
        return 0.0
    return len(words & set(bm25_tokens([section_text])[0])) / len(words)


def generation_messages(config: EvaluationSettings, heading_path: list[str], passage: str,
                        style: str) -> list[dict[str, str]]:
    """The chat asking for one pair: the human-written example passage and its pair of this style
    as a finished first exchange (a small model copies examples shown inside the request), then
    the passage."""
    def ask(path: str, text: str) -> dict[str, str]:
        return {"role": "user", "content": config.user_prompt.format(heading_path=path, text=text, style=style)}

    example = next((e for e in config.seed_examples if e["style"] == style), None)
    shown = [ask(config.seed_section["heading_path"], config.seed_section["text"]),
             {"role": "assistant", "content": json.dumps({"question": example["question"],
                                                          "answer": example["answer"]})}] if example else []
    return [{"role": "system", "content": config.system_prompt}, *shown, ask(" > ".join(heading_path), passage)]


def split_of(section_id: str, test_fraction: float) -> str:
    """train | test for every question of a section, stable: the section id's hash decides, so
    no section has questions on both sides (fine-tuning on one and testing on the other would leak)."""
    return "test" if int(section_id[:8], 16) / 0xFFFFFFFF < test_fraction else "train"


@dataclass
class EvalSetReport:
    """What one generation run did."""

    statuses: dict[str, int] = field(default_factory=dict)  # active / rejected -> rows written
    reasons: dict[str, int] = field(default_factory=dict)  # unsupported / duplicate -> rejected rows
    sections: int = 0  # sections given to the generator in this run
    resplit: int = 0  # questions whose split moved to their section's side
    failed_sections: int = 0  # sections that gave no valid pair at all
    failed_calls: int = 0  # passages whose call gave no valid JSON (after one retry) or failed in the backend
    retired: int = 0  # pairs of sections that changed (their file is still there)
    erased: int = 0  # pairs of documents whose file was deleted
    waiting: int = 0  # qualifying sections left for later runs
    other_languages: int = 0  # long enough sections left out: their document is not in evaluation.languages
    prompt_tokens: int = 0
    completion_tokens: int = 0


def generate_pairs(llm: LLM, config: EvaluationSettings, section: dict[str, Any],
                   report: EvalSetReport) -> list[dict[str, str]]:
    """One section -> validated pairs, one per passage with the styles in turn (one retry after
    malformed output); a passage whose call fails gives none, a section with none counts as failed."""
    pairs = []
    for position, passage in enumerate(passages(section["text"], config)):
        style = config.styles[position % len(config.styles)]
        messages = generation_messages(config, list(section["heading_path"]), passage, style)
        for _ in range(2):
            try:
                reply = llm.chat(messages, max_tokens=config.max_new_tokens, schema=pair_schema())
            except LLMError as err:
                log.warning("section %s, passage %d: backend failed: %s", section["section_id"], position, err)
                report.failed_calls += 1
                break
            report.prompt_tokens += reply.prompt_tokens
            report.completion_tokens += reply.completion_tokens
            try:
                pairs.append({"style": style, "position": position, **parse_pair(reply.text)})
                break
            except MalformedOutput as err:
                messages = messages + [{"role": "assistant", "content": reply.text},
                                       {"role": "user", "content": f"That was not valid ({err}). Answer with the JSON object only."}]
        else:
            report.failed_calls += 1
    if not pairs:
        report.failed_sections += 1
    return pairs


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


def resplit(spark: SparkSession, table: str, test_fraction: float) -> int:
    """Move generated questions to their section's split (sets made when the split went by
    question); returns how many moved. Feedback candidates keep theirs."""
    rows = (spark.table(table).filter(F.col("generator") != FEEDBACK).select("question_id", "section_id").collect())
    if not rows:
        return 0
    splits = spark.createDataFrame([(r.question_id, split_of(r.section_id, test_fraction)) for r in rows],
                                   "question_id string, split string")
    return sync_column(spark, table, EVAL_QUESTIONS.key, splits, "split")


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
    report.resplit = resplit(spark, table, config.test_fraction)
    done = existing.filter((F.col("generator") == generator) & (F.col("prompt_version") == config.prompt_version)
                           & (F.col("seed") == config.seed)).select("section_id").distinct()
    qualifying = sections.filter(F.length("text") >= config.min_chars)
    if config.languages:
        languages = spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).select("doc_id", "language")
        by_language = qualifying.join(languages, "doc_id", "left")
        report.other_languages = by_language.filter(~F.col("language").isin(*config.languages)
                                                    | F.col("language").isNull()).count()
        qualifying = by_language.filter(F.col("language").isin(*config.languages)).drop("language")
    todo = (qualifying.join(done, "section_id", "left_anti")
            .withColumn("_order", F.sha2(F.concat(F.lit(str(config.seed)), F.col("section_id")), 256))
            .orderBy("_order"))
    waiting = todo.count()
    batch = [row.asDict() for row in (todo.limit(config.max_sections) if config.max_sections else todo).collect()]
    report.waiting, report.sections = waiting - len(batch), len(batch)
    if not batch:
        return report
    llm = llm or make_llm(settings.llm)
    kept_questions = [r.question for r in existing.filter(F.col("status") == "active").select("question").collect()]
    kept_vectors = torch_encode(settings.models.embedding, kept_questions, 64) if kept_questions else None
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for finished, section in enumerate(batch, 1):
        for pair in generate_pairs(llm, config, section, report):
            question_id = content_id(section["section_id"], generator, config.prompt_version, str(config.seed),
                                     str(pair["position"]))
            status, kind, reason = "active", None, None
            supported = support(pair["answer"], section["text"])
            vector = torch_encode(settings.models.embedding, [pair["question"]], 1)
            closest = float((kept_vectors @ vector[0]).max()) if kept_vectors is not None else 0.0
            if supported < config.min_support:
                status, kind, reason = "rejected", "unsupported", f"unsupported (support {supported:.2f})"
            elif closest >= config.max_similarity:
                status, kind, reason = "rejected", "duplicate", f"duplicate (similarity {closest:.2f})"
            else:
                kept_vectors = vector if kept_vectors is None else np.vstack([kept_vectors, vector])
            rows.append({"question_id": question_id, "section_id": section["section_id"], "doc_id": section["doc_id"],
                         "question": pair["question"], "reference_answer": pair["answer"], "style": pair["style"],
                         "generator": generator, "prompt_version": config.prompt_version, "seed": config.seed,
                         "split": split_of(section["section_id"], config.test_fraction), "status": status,
                         "reason": reason, "created_at": run_time})
            report.statuses[status] = report.statuses.get(status, 0) + 1
            if kind:
                report.reasons[kind] = report.reasons.get(kind, 0) + 1
        elapsed = time.perf_counter() - started
        log.info("eval questions: %d/%d sections, %d kept, %.0f s elapsed, about %.0f s left", finished, len(batch),
                 report.statuses.get("active", 0), elapsed, elapsed / finished * (len(batch) - finished))
        if len(rows) >= FLUSH_ROWS or finished == len(batch):
            # written as it goes: an interrupted run of hours keeps what it made
            merge_into(spark, table, spark.createDataFrame(rows, EVAL_QUESTIONS.schema), EVAL_QUESTIONS.key)
            rows = []
    return report
