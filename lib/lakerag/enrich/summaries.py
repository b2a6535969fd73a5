"""Section summaries and LLM-extracted metadata (title, keywords, questions).

The model must answer with one JSON object; `parse_metadata` validates it and nothing
unvalidated is stored: malformed output is asked for again (summaries.retries), then recorded
as a failed row with the reason. Rows are keyed by section, model and prompt version, so a
re-run recomputes nothing and a new prompt version recomputes everything for its model.
The model runs in the driver (a budget of sections per run, with progress and an estimate):
a local CPU model is slow, and a served endpoint is a remote call either way.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame, SparkSession
from tqdm import tqdm

from lakerag.ingest.parse_pool import content_id
from lakerag.lakehouse.engine import Lakehouse
from lakerag.chain.llm import LLM, LLMError, MalformedOutput, Messages, json_in, make_llm, model_key
from lakerag.settings import SUMMARY_FIELDS, Settings, SummarySettings
from lakerag.lakehouse.tables import SILVER_CHUNKS, SILVER_SECTION_SUMMARIES, SILVER_SECTIONS, merge_into

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SectionMetadata:
    """Validated model output for one section (None: a field summaries.fields did not ask for)."""

    summary: str | None
    title: str | None
    keywords: list[str] | None
    questions: list[str] | None


def _strings(value: Any, name: str, low: int, high: int) -> list[str]:
    if not isinstance(value, list) or not low <= len(value) <= high:
        raise MalformedOutput(f'"{name}" must be a list of {low} to {high} strings')
    items = [item.strip() for item in value if isinstance(item, str) and item.strip()]
    if len(items) != len(value):
        raise MalformedOutput(f'"{name}" must hold non-empty strings only')
    return items


# Lists and strings are bounded so the longest object the schema allows (about 1,100 characters,
# under 300 tokens) fits summaries.max_new_tokens: a grammar fixes the shape of the output, not its
# length, and JSON cut off by the token limit is malformed (seen: a 0.5B model repeated keywords
# until the limit).
_SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string", "minLength": 20, "maxLength": 500},
                   "title": {"type": "string", "minLength": 1, "maxLength": 80},
                   "keywords": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 30},
                                "minItems": 1, "maxItems": 6},
                   # one line ending in "?" (parse_metadata refuses anything else)
                   "questions": {"type": "array", "items": {"type": "string", "pattern": "^[^\\n]{4,118}[?]$"},
                                 "minItems": 1, "maxItems": 3}},
}


def metadata_schema(fields: tuple = tuple(SUMMARY_FIELDS)) -> dict:
    """The JSON schema of an answer holding `fields` (summaries.fields)."""
    return {"type": "object", "properties": {name: _SCHEMA["properties"][name] for name in fields},
            "required": list(fields)}


def parse_metadata(text: str, fields: tuple = tuple(SUMMARY_FIELDS)) -> SectionMetadata:
    """Model output -> validated metadata of `fields`; raises MalformedOutput saying what is wrong."""
    data = json_in(text, dict)
    missing = sorted(set(fields) - set(data))
    if missing:
        raise MalformedOutput(f"missing keys {missing}")
    summary, title, keywords, questions = (data.get(name) if name in fields else None for name in SUMMARY_FIELDS)
    if "summary" in fields and (not isinstance(summary, str) or not 20 <= len(summary.strip()) <= 1500):
        raise MalformedOutput('"summary" must be a string of 20 to 1500 characters')
    if "title" in fields and (not isinstance(title, str) or not 1 <= len(title.strip()) <= 200):
        raise MalformedOutput('"title" must be a string of 1 to 200 characters')
    if "questions" in fields:
        questions = _strings(questions, "questions", 1, 5)
        if not all(question.endswith("?") for question in questions):
            raise MalformedOutput('every entry of "questions" must end with "?"')
    return SectionMetadata(summary.strip() if summary is not None else None,
                           title.strip() if title is not None else None,
                           _strings(keywords, "keywords", 1, 12) if "keywords" in fields else None, questions)


def summary_messages(settings: SummarySettings, section: dict[str, Any], text: str) -> Messages:
    """The chat messages that ask for one section's summary and metadata, given its `text`."""
    keys = ", ".join(SUMMARY_FIELDS[name] for name in SUMMARY_FIELDS if name in settings.fields)
    user = settings.user_prompt.format(heading_path=" > ".join(section["heading_path"]), title=section["title"],
                                       text=text[: settings.max_input_chars], keys=keys)
    return [{"role": "system", "content": settings.system_prompt}, {"role": "user", "content": user}]


class _Usage:
    """Tokens and model time summed over the calls made for one section."""

    def __init__(self) -> None:
        self.prompt_tokens, self.completion_tokens, self.latency_s = 0, 0, 0.0

    def add(self, reply) -> str:
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        self.latency_s += reply.latency_s
        return reply.text

    def fields(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "latency_s": self.latency_s}


def section_input(llm: LLM, settings: SummarySettings, section: dict[str, Any], usage: _Usage) -> str:
    """The text the metadata prompt gets: the section itself when it fits max_input_chars, else
    the joined one-line summaries of its chunks (map step), so a long section is covered whole."""
    text, chunks = section["text"], section.get("chunks") or []
    if len(text) <= settings.max_input_chars or not chunks:
        return text
    heading = " > ".join(section["heading_path"])
    parts = []
    for chunk in chunks[: settings.max_chunks]:
        prompt = settings.chunk_prompt.format(heading_path=heading, text=chunk)
        reply = llm.chat([{"role": "user", "content": prompt}], max_tokens=settings.chunk_max_new_tokens)
        parts.append(" ".join(usage.add(reply).split()))
    return "\n".join(f"- {part}" for part in parts if part)


def summarize_section(llm: LLM, settings: SummarySettings, section: dict[str, Any]) -> dict[str, Any]:
    """One section (with `chunks`: its chunk texts in order, used when it is long) -> the fields
    of its summaries row (status ok or failed, tokens, time)."""
    usage = _Usage()
    try:
        messages = summary_messages(settings, section, section_input(llm, settings, section, usage))
        error, schema = "", metadata_schema(settings.fields)
        for _ in range(1 + settings.retries):
            text = usage.add(llm.chat(messages, max_tokens=settings.max_new_tokens, schema=schema))
            try:
                metadata = parse_metadata(text, settings.fields)
            except MalformedOutput as err:
                error = f"malformed output: {err}"
                messages = messages + [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": f"That was not valid ({err}). Answer with the JSON object only."},
                ]
                continue
            return usage.fields() | {"status": "ok", "summary": metadata.summary, "title": metadata.title,
                                     "keywords": metadata.keywords, "questions": metadata.questions}
    except LLMError as err:
        return usage.fields() | {"status": "failed", "error": f"backend: {err}"}
    return usage.fields() | {"status": "failed", "error": error}


def qualifying_sections(sections: DataFrame, settings: SummarySettings) -> DataFrame:
    """Sections the budget admits: long enough, of a listed level, longest first."""
    chosen = sections.filter(F.length("text") >= settings.min_chars)
    if settings.levels:
        chosen = chosen.filter(F.col("level").isin(*settings.levels))
    return chosen.orderBy(F.length("text").desc(), "section_id")


@dataclass
class SummaryReport:
    """What one summaries run did, and what it cost."""

    written: dict[str, int] = field(default_factory=dict)  # status -> rows
    removed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    waiting: int = 0  # qualifying sections left for later runs by the budget

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)

    def metrics(self) -> dict[str, float]:
        """Run totals for MLflow: rows by status, tokens in/out, sections left for later."""
        return {"sections_ok": self.written.get("ok", 0), "sections_failed": self.written.get("failed", 0),
                "sections_removed": self.removed, "sections_waiting": self.waiting,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


def run_params(settings: Settings) -> dict[str, Any]:
    """What a summaries run is keyed and budgeted by, for MLflow (no secrets: keys stay in env)."""
    config = settings.summaries
    return {"model": model_key(settings), "prompt_version": config.version,
            "max_sections": config.max_sections, "min_chars": config.min_chars,
            "max_input_chars": config.max_input_chars, "chunk_strategy": config.chunk_strategy,
            "max_chunks": config.max_chunks, "max_new_tokens": config.max_new_tokens}


def _attach_chunks(spark: SparkSession, lakehouse: Lakehouse, config: SummarySettings,
                   batch: list[dict[str, Any]]) -> None:
    """Give each long section of `batch` its chunk texts (chunk_strategy, in order)."""
    long_ids = [s["section_id"] for s in batch if len(s["text"]) > config.max_input_chars]
    if not long_ids:
        return
    chunks = (spark.table(lakehouse.table(SILVER_CHUNKS.name))
              .filter((F.col("strategy") == config.chunk_strategy) & F.col("section_id").isin(*long_ids))
              .select("section_id", "chunk_index", "text").collect())
    by_section: dict[str, list] = {}
    for chunk in sorted(chunks, key=lambda c: (c.section_id, c.chunk_index)):
        by_section.setdefault(chunk.section_id, []).append(chunk.text)
    for section in batch:
        section["chunks"] = by_section.get(section["section_id"], [])
        if section["section_id"] in long_ids and not section["chunks"]:
            log.warning("section %s is longer than summaries.max_input_chars but has no %s chunks: its first "
                        "%d characters are summarised", section["section_id"], config.chunk_strategy,
                        config.max_input_chars)


def summary_text() -> Column:
    """What a summary row contributes to search: its title, summary and questions in one string."""
    return F.concat_ws(" ", "title", "summary", F.array_join("questions", " "))


def run_summaries(spark: SparkSession, lakehouse: Lakehouse, settings: Settings, llm: LLM | None = None,
                  run_time: datetime | None = None) -> SummaryReport:
    """Summarise the qualifying sections that have no row for this model and prompt version."""
    run_time = run_time or datetime.now(timezone.utc)
    config, model = settings.summaries, model_key(settings)
    table = lakehouse.table(SILVER_SECTION_SUMMARIES.name)
    sections = spark.table(lakehouse.table(SILVER_SECTIONS.name))
    mine = spark.table(table).filter(F.col("model") == model)
    report = SummaryReport()
    stale = (mine.join(sections.select("section_id"), "section_id", "left_anti")
             .unionByName(mine.filter(F.col("prompt_version") != config.version))
             .select(*SILVER_SECTION_SUMMARIES.key).distinct())
    report.removed = stale.count()
    if report.removed:
        merge_into(spark, table, stale, SILVER_SECTION_SUMMARIES.key, matched="DELETE", insert=False)
    todo = qualifying_sections(
        sections.join(mine.filter(F.col("prompt_version") == config.version).select("section_id"),
                      "section_id", "left_anti"), config)
    waiting = todo.count()
    batch = [row.asDict() for row in (todo.limit(config.max_sections) if config.max_sections else todo).collect()]
    report.waiting = waiting - len(batch)
    if not batch:
        return report
    _attach_chunks(spark, lakehouse, config, batch)
    llm = llm or make_llm(settings.llm)
    log.info("summarising %d sections with %s (%d more qualify)", len(batch), model, report.waiting)
    rows = []
    for section in tqdm(batch, desc="summaries", unit="section", disable=None):
        outcome = summarize_section(llm, config, section)
        rows.append({
            "section_id": section["section_id"], "model": model, "prompt_version": config.version,
            "summary_id": content_id(section["section_id"], model, config.version),
            "doc_id": section["doc_id"], "summary": None, "title": None, "keywords": None, "questions": None,
            "error": None, "created_at": run_time, **outcome,
        })
        report.written[outcome["status"]] = report.written.get(outcome["status"], 0) + 1
        report.prompt_tokens += outcome["prompt_tokens"]
        report.completion_tokens += outcome["completion_tokens"]
    merge_into(spark, table, spark.createDataFrame(rows, SILVER_SECTION_SUMMARIES.schema),
               SILVER_SECTION_SUMMARIES.key)
    return report
