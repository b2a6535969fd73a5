"""Silver: active bronze PDFs -> documents, sections, chunks, section links; unparseable ones -> failures.

Incremental and content-addressed: a document is parsed once per parser version; documents
that left bronze (superseded or deleted) or were parsed by an older parser lose their rows;
chunks are built per strategy and settings fingerprint, so changing one strategy's settings
rebuilds that strategy only. A run with nothing new writes nothing.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator

import pandas as pd
import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession

from lakerag.ingest.chunking import ChunkSpec
from lakerag.ingest.ocr import OcrOptions
from lakerag.ingest.parse_pool import (
    ParseLimits,
    chunk_task,
    crashed_parse,
    parallel_map,
    parse_task,
    resolve_parse_workers,
    start_pool,
)
from lakerag.lakehouse.engine import Lakehouse
from lakerag.weights import max_sequence_tokens
from lakerag.ingest.pdf_parse import parser_version
from lakerag.settings import Settings
from lakerag.lakehouse.tables import (
    ACTIVE,
    BRONZE_DOCUMENTS,
    SILVER_CHUNKS,
    SILVER_DOCUMENTS,
    SILVER_PARSE_FAILURES,
    SILVER_PARSE_STAGING,
    SILVER_SECTION_LINKS,
    SILVER_SECTIONS,
    merge_into,
    sync_column,
)

log = logging.getLogger(__name__)
PASSWORDS_ENV = "LAKERAG_PDF_PASSWORDS"


def parse_documents(
    documents: DataFrame, passwords: tuple[str, ...], specs: list[ChunkSpec], workers: int, run_time: datetime,
    limits: ParseLimits, ocr: OcrOptions | None = None, tables: bool = False, layout: bool = False,
) -> DataFrame:
    """Bronze documents (doc_id, source_path, file_name, content) -> staging rows, parsed and
    chunked in `workers` processes, each document within `limits`, pages without a text layer
    read by `ocr` (None: left empty), ruled tables as Markdown when `tables`, uncertain pages in a
    layout model's order when `layout`."""

    def parse_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            # Largest first, so the longest documents do not start last and leave a core idle.
            batch = batch.assign(size=batch["content"].map(len)).sort_values("size", ascending=False)
            args = [(d, bytes(c), p, f, passwords, specs, run_time, limits, ocr, tables, layout)
                    for d, c, p, f in zip(batch["doc_id"], batch["content"], batch["source_path"], batch["file_name"])]
            rows = parallel_map(parse_task, args, workers, "parse PDFs", on_crash=crashed_parse)
            yield pd.DataFrame(rows, columns=[f.name for f in SILVER_PARSE_STAGING.schema.fields])

    return documents.select("doc_id", "source_path", "file_name", "content").mapInPandas(
        parse_batches, SILVER_PARSE_STAGING.schema
    )


def chunk_specs(settings: Settings) -> list[ChunkSpec]:
    """The configured strategies, with the token cap resolved from the embedding model."""
    model = settings.models.embedding
    cap = settings.silver.max_tokens or max_sequence_tokens(model) - 2  # [CLS] and [SEP]
    return [
        ChunkSpec(strategy, cap, settings.silver.fixed_tokens, settings.silver.fixed_overlap,
                  settings.silver.paragraph_min_tokens, model)
        for strategy in settings.silver.strategies
    ]


def chunk_sections(sections: DataFrame, specs: list[ChunkSpec], workers: int) -> DataFrame:
    """Sections (with strategy, chunker_fingerprint and tags columns) -> silver_chunks rows."""
    by_fingerprint = {spec.fingerprint: spec for spec in specs}

    def chunk_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            tasks = [(row, [by_fingerprint[row["chunker_fingerprint"]]], dict(row["tags"]))
                     for row in batch.to_dict("records")]
            rows = [chunk for chunks in parallel_map(chunk_task, tasks, workers, "chunk sections") for chunk in chunks]
            yield pd.DataFrame(rows, columns=[f.name for f in SILVER_CHUNKS.schema.fields])

    return sections.mapInPandas(chunk_batches, SILVER_CHUNKS.schema)


def document_labels(bronze: DataFrame) -> DataFrame:
    """doc_id -> groups: who may read the bytes is whoever may read any active path holding them."""
    return (bronze.filter(F.col("status") == ACTIVE).select("doc_id", F.explode("groups").alias("group"))
            .groupBy("doc_id").agg(F.array_sort(F.collect_set("group")).alias("groups")))


def active_documents(bronze: DataFrame) -> DataFrame:
    """One row per active bronze doc_id (the first path that has those bytes), with content."""
    first_path = (bronze.filter(F.col("status") == ACTIVE).groupBy("doc_id")
                  .agg(F.min("source_path").alias("source_path")))
    return bronze.filter(F.col("status") == ACTIVE).join(first_path, ["doc_id", "source_path"], "left_semi")


@dataclass
class SilverReport:
    """What one silver run did."""

    parsed: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    removed_documents: int = 0
    sections_added: int = 0
    chunks_added: dict[str, int] = field(default_factory=dict)
    chunks_removed: int = 0
    links_added: dict[str, int] = field(default_factory=dict)  # resolved edges by kind
    unresolved: dict[str, int] = field(default_factory=dict)  # by kind: edges that reach no section
    relabelled: int = 0  # documents whose groups changed without a parse

    @property
    def changed(self) -> bool:
        """True if the run wrote anything."""
        return bool(self.parsed or self.failed or self.removed_documents or self.chunks_added or self.chunks_removed
                    or self.relabelled)


def _strategy_counts(chunks: DataFrame) -> dict[str, int]:
    return {r["strategy"]: r["n"] for r in chunks.groupBy("strategy").agg(F.count("*").alias("n")).collect()}


def run_silver(
    spark: SparkSession, lakehouse: Lakehouse, settings: Settings, engine: str, run_time: datetime | None = None
) -> SilverReport:
    """Bring the silver tables in line with the active bronze documents and chunk settings."""
    run_time = run_time or datetime.now(timezone.utc)
    specs = chunk_specs(settings)
    workers = resolve_parse_workers(settings.silver.parse_workers, engine)
    table = {spec.name: lakehouse.table(spec.name) for spec in
             (BRONZE_DOCUMENTS, SILVER_DOCUMENTS, SILVER_SECTIONS, SILVER_CHUNKS, SILVER_SECTION_LINKS,
              SILVER_PARSE_FAILURES, SILVER_PARSE_STAGING)}
    report = SilverReport()
    active = active_documents(spark.table(table["bronze_documents"]))
    labels = document_labels(spark.table(table["bronze_documents"]))
    outcomes = (spark.table(table["silver_documents"]).select("doc_id", "parser_version")
                .unionByName(spark.table(table["silver_parse_failures"]).select("doc_id", "parser_version")))
    ocr = (OcrOptions(settings.silver.ocr_dpi, settings.silver.ocr_languages, settings.silver.ocr_page_seconds)
           if settings.silver.ocr else None)
    done = outcomes.filter(F.col("parser_version") == parser_version(ocr, settings.silver.tables, settings.silver.layout)).select("doc_id")
    keep = active.select("doc_id").join(done, "doc_id", "left_semi")
    existing = (outcomes.select("doc_id")
                .unionByName(spark.table(table["silver_sections"]).select("doc_id"))
                .unionByName(spark.table(table["silver_chunks"]).select("doc_id")).distinct())
    stale = [r.doc_id for r in existing.join(keep, "doc_id", "left_anti").collect()]
    if stale:
        # Superseded, deleted, or parsed by an older parser (re-parsed below): drop every row.
        log.info("removing silver rows of %d documents no longer active or out of date", len(stale))
        stale_ids = spark.createDataFrame([(d,) for d in stale], "doc_id string")
        for name in ("silver_chunks", "silver_section_links", "silver_sections", "silver_parse_failures",
                     "silver_documents"):
            merge_into(spark, table[name], stale_ids, ["doc_id"], matched="DELETE", insert=False)
        report.removed_documents = len(stale)

    to_parse = active.join(done, "doc_id", "left_anti")
    if not to_parse.isEmpty():
        start_pool(workers, settings.models.embedding)  # warms up while Spark plans the parse
        passwords = tuple(p for p in os.environ.get(PASSWORDS_ENV, "").splitlines() if p)
        log.info("parsing and chunking %d documents with %d process(es)", to_parse.count(), workers)
        limits = ParseLimits(settings.silver.max_pages, settings.silver.max_parse_seconds,
                             settings.silver.max_parse_memory_mb)
        parsed = parse_documents(to_parse, passwords, specs, workers, run_time, limits, ocr, settings.silver.tables,
                                 settings.silver.layout)
        parsed.write.insertInto(table["silver_parse_staging"], overwrite=True)
        staged = spark.table(table["silver_parse_staging"])
        ok = staged.filter(F.col("reason").isNull())
        sections = ok.select(F.explode("sections").alias("s")).select("s.*")
        failures = staged.filter(F.col("reason").isNotNull()).select(
            *[f.name for f in SILVER_PARSE_FAILURES.schema.fields if f.name != "failed_at"],
            F.col("parsed_at").alias("failed_at"))
        # Documents last: a silver_documents row marks a document done, so a crash before it
        # leaves the document to be cleaned and parsed again.
        chunks = ok.select(F.explode("chunks").alias("c")).select("c.*")
        merge_into(spark, table["silver_sections"], sections, SILVER_SECTIONS.key)
        merge_into(spark, table["silver_chunks"], chunks, SILVER_CHUNKS.key)
        links = ok.select(F.explode("links").alias("l")).select("l.*")
        merge_into(spark, table["silver_section_links"], links, SILVER_SECTION_LINKS.key)
        merge_into(spark, table["silver_parse_failures"], failures, SILVER_PARSE_FAILURES.key)
        labelled = ok.join(labels, "doc_id", "left")
        merge_into(spark, table["silver_documents"], labelled.select(*SILVER_DOCUMENTS.schema.fieldNames()),
                   SILVER_DOCUMENTS.key)
        counts = staged.agg(F.count_if(F.col("reason").isNull()).alias("parsed"),
                            F.sum(F.size("sections")).alias("sections")).first()
        report.parsed, report.sections_added = counts.parsed, counts.sections or 0
        report.failed = {r.reason: r.n for r in failures.groupBy("reason").agg(F.count("*").alias("n")).collect()}
        report.chunks_added = _strategy_counts(chunks)
        counted = links.groupBy("kind", F.col("to_section_id").isNull().alias("unresolved")).agg(
            F.count("*").alias("n")).collect()
        report.links_added = {r.kind: r.n for r in counted if not r.unresolved}
        report.unresolved = {r.kind: r.n for r in counted if r.unresolved}
        # Scratch no more: emptied, so a deleted document's text does not linger here.
        spark.createDataFrame([], SILVER_PARSE_STAGING.schema).write.insertInto(table["silver_parse_staging"],
                                                                                overwrite=True)

    _sync_chunks(spark, table, specs, workers, report)
    documents = spark.table(table["silver_documents"]).select(*SILVER_DOCUMENTS.key)
    report.relabelled = sync_column(
        spark, table["silver_documents"], SILVER_DOCUMENTS.key,
        documents.join(labels, "doc_id"), "groups")
    return report


def _sync_chunks(
    spark: SparkSession, table: dict[str, str], specs: list[ChunkSpec], workers: int, report: SilverReport
) -> None:
    """Drop chunks of strategies or settings no longer configured; chunk sections lacking chunks."""
    chunks = spark.table(table["silver_chunks"])
    wanted = spark.createDataFrame([(s.strategy, s.fingerprint) for s in specs],
                                   "strategy string, chunker_fingerprint string")
    if not chunks.join(wanted, ["strategy", "chunker_fingerprint"], "left_anti").isEmpty():
        keep = " OR ".join(f"(strategy = '{s.strategy}' AND chunker_fingerprint = '{s.fingerprint}')" for s in specs)
        before = chunks.count()
        spark.sql(f"DELETE FROM {table['silver_chunks']} WHERE NOT ({keep})")
        report.chunks_removed = before - spark.table(table["silver_chunks"]).count()
        log.info("removed %d chunks of changed or dropped strategies", report.chunks_removed)

    sections = spark.table(table["silver_sections"]).filter(F.length(F.trim("text")) > 0)
    missing = sections.crossJoin(wanted).join(
        spark.table(table["silver_chunks"]).select("section_id", "strategy", "chunker_fingerprint").distinct(),
        ["section_id", "strategy", "chunker_fingerprint"], "left_anti")
    if missing.isEmpty():
        return
    start_pool(workers, specs[0].model)
    documents = spark.table(table["silver_documents"]).select(
        "doc_id", F.create_map(F.lit("doc_title"), "title", F.lit("file_name"), "file_name",
                               F.lit("language"), "language").alias("tags"))
    log.info("chunking sections that lack chunks for the configured strategies")
    before = _strategy_counts(spark.table(table["silver_chunks"]))
    chunk_sections(missing.join(documents, "doc_id"), specs, workers).write.insertInto(table["silver_chunks"])
    after = _strategy_counts(spark.table(table["silver_chunks"]))
    for strategy, n in after.items():
        if n != before.get(strategy, 0):
            report.chunks_added[strategy] = report.chunks_added.get(strategy, 0) + n - before.get(strategy, 0)
