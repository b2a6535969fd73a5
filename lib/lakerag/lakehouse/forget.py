"""Forget a document on demand: every row made from it, its index entries, its landing file,
and (locally) the Delta files that still hold it for time travel.

The scheduled pipeline already drops a deleted file's rows on its next run; `forget` does it now
and reports what went, for erasure requests that cannot wait for the schedule.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame, SparkSession

from lakerag.lakehouse.engine import Lakehouse
from lakerag.enrich.index_build import build_index
from lakerag.settings import Settings
from lakerag.lakehouse.tables import (
    BRONZE_DOCUMENTS,
    BRONZE_QUARANTINE,
    EVAL_QUESTIONS,
    GOLD_EMBEDDINGS,
    SERVING_ANSWERS,
    SILVER_CHUNKS,
    SILVER_DOCUMENTS,
    SILVER_PARSE_FAILURES,
    SILVER_PARSE_STAGING,
    SILVER_SECTION_LINKS,
    SILVER_SECTION_SUMMARIES,
    SILVER_SECTIONS,
    TableSpec,
    merge_into,
)

log = logging.getLogger(__name__)

# Tables whose rows carry the doc_id of the document they came from.
BY_DOC_ID: tuple[TableSpec, ...] = (
    SILVER_DOCUMENTS, SILVER_SECTIONS, SILVER_CHUNKS, SILVER_SECTION_LINKS, SILVER_PARSE_FAILURES,
    SILVER_PARSE_STAGING, SILVER_SECTION_SUMMARIES, GOLD_EMBEDDINGS, EVAL_QUESTIONS,
)


class NoSuchDocument(LookupError):
    """The reference matches no document, or several files."""


@dataclass
class ForgetReport:
    """What forgetting one document removed (or would remove, in a dry run)."""

    doc_ids: list[str]
    source_paths: list[str]
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows removed
    index_folders: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    vacuumed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    traces: dict[str, list[str]] = field(default_factory=dict)  # experiment id -> deleted trace ids


def find_document(spark: SparkSession, lakehouse: Lakehouse, ref: str) -> tuple[list[str], list[str]]:
    """A doc_id, a landing path or a file name -> (every doc_id it has had, its source paths).

    Every version of the file is included: older versions hold the same person's data.
    """
    def matching(spec: TableSpec) -> DataFrame:
        table = spark.table(lakehouse.table(spec.name))
        condition = (F.col("source_path") == ref) | (F.col("file_name") == ref)
        if spec is BRONZE_DOCUMENTS:
            condition = condition | (F.col("doc_id") == ref)
        return table.filter(condition).select("source_path")

    paths = sorted({r.source_path for r in matching(BRONZE_DOCUMENTS).unionByName(matching(BRONZE_QUARANTINE))
                    .distinct().collect()})
    if not paths:
        raise NoSuchDocument(f"no bronze document or quarantined file matches {ref!r}: "
                             "give a doc_id, a landing path or a file name")
    if len(paths) > 1 and all(Path(p).name == ref for p in paths):
        raise NoSuchDocument(f"several files are named {ref!r}: give one full path of "
                             + ", ".join(paths))
    bronze = spark.table(lakehouse.table(BRONZE_DOCUMENTS.name))
    doc_ids = sorted({r.doc_id for r in bronze.filter(F.col("source_path").isin(paths) | (F.col("doc_id") == ref))
                      .select("doc_id").distinct().collect()})
    return doc_ids, paths


def _rows_of(spark: SparkSession, lakehouse: Lakehouse, doc_ids: list[str], paths: list[str]) -> dict[TableSpec, DataFrame]:
    """Each table's rows that came from the documents, as key columns."""
    def where(spec: TableSpec, condition: Column) -> DataFrame:
        return spark.table(lakehouse.table(spec.name)).filter(condition).select(*spec.key)

    ids = F.col("doc_id").isin(doc_ids) if doc_ids else F.lit(False)
    found = {spec: where(spec, ids) for spec in BY_DOC_ID}
    # answers that cite the document quote it
    found[SERVING_ANSWERS] = (spark.table(lakehouse.table(SERVING_ANSWERS.name))
                              .select(*SERVING_ANSWERS.key, F.explode("citations").alias("cited"))
                              .filter(F.col("cited.doc_id").isin(doc_ids) if doc_ids else F.lit(False))
                              .select(*SERVING_ANSWERS.key))
    found[BRONZE_DOCUMENTS] = where(BRONZE_DOCUMENTS, F.col("source_path").isin(paths) | ids)
    found[BRONZE_QUARANTINE] = where(BRONZE_QUARANTINE, F.col("source_path").isin(paths))
    return found


def _index_folders_holding(index_root: Path, doc_ids: list[str]) -> list[Path]:
    """Built index versions under `index_root` with a row of the documents."""
    folders = []
    for chunks in sorted(Path(index_root).glob("*/v*/chunks.parquet")):
        if pd.read_parquet(chunks, columns=["doc_id"])["doc_id"].isin(doc_ids).any():
            folders.append(chunks.parent)
    return folders


def forget(
    spark: SparkSession, lakehouse: Lakehouse, settings: Settings, ref: str, index_root: Path | None,
    delete_source: bool = True, dry_run: bool = False, experiment_ids: list[str] | None = None,
) -> ForgetReport:
    """Remove document `ref` everywhere; see the module docstring. Nothing is changed if dry_run."""
    doc_ids, paths = find_document(spark, lakehouse, ref)
    report = ForgetReport(doc_ids, paths)
    for spec, found in _rows_of(spark, lakehouse, doc_ids, paths).items():
        # Keys are collected first: a MERGE must not read the table it deletes from.
        keys = [tuple(row) for row in found.distinct().collect()]
        if keys:
            report.rows[spec.name] = len(keys)
            if not dry_run:
                log.info("%s: deleting %d rows", spec.name, len(keys))
                merge_into(spark, lakehouse.table(spec.name), spark.createDataFrame(keys, found.schema), spec.key,
                           matched="DELETE", insert=False)

    # The landing file goes before anything that can fail, so a retry cannot find the rows gone
    # but the file still there (the next ingest would bring the document back).
    for path in paths:
        local = Path(path)
        if delete_source and local.is_file():
            report.files.append(path)
            if not dry_run:
                local.unlink()
        elif local.exists() or "://" in path or path.startswith("dbfs:"):
            report.notes.append(f"{path} is still in the landing folder: the next ingest brings it back "
                                "unless it is removed there")

    if index_root is not None and Path(index_root).is_dir():
        stale = _index_folders_holding(index_root, doc_ids)
        report.index_folders = [str(f) for f in stale]
        if stale and not dry_run:
            try:
                rebuilt = build_index(spark, lakehouse, settings, index_root).folder
                log.info("index rebuilt without the document: %s", rebuilt)
            except ValueError:  # nothing left to index: the stale versions just go
                rebuilt = None
            for folder in stale:
                if folder != rebuilt:
                    shutil.rmtree(folder)

    if experiment_ids:
        report.traces = traces_citing(experiment_ids, set(doc_ids))
        if report.traces and not dry_run:
            from mlflow import MlflowClient

            for experiment_id, trace_ids in report.traces.items():
                MlflowClient().delete_traces(experiment_id, trace_ids=trace_ids)
    if not dry_run:
        _purge_history(lakehouse, report)
    report.notes.append("chain versions registered before the chain read its index from the index root carry "
                        "a copy of the index in their artifacts: delete those versions to purge the copies")
    return report


def traces_citing(experiment_ids: list[str], doc_ids: set[str], max_traces: int = 50_000) -> dict[str, list[str]]:
    """Trace ids, by experiment, of answers whose retrieval returned a chunk of `doc_ids` (their
    retriever spans hold its text, and the question and answer may quote it)."""
    import mlflow

    found: dict[str, list[str]] = {}
    for experiment_id in experiment_ids:
        for trace in mlflow.search_traces(locations=[experiment_id], max_results=max_traces, return_type="list"):
            retrieved = [doc.get("metadata", {}).get("doc_id") for span in trace.data.spans
                         if span.span_type == "RETRIEVER" for doc in (span.outputs or [])]
            if doc_ids.intersection(retrieved):
                found.setdefault(experiment_id, []).append(trace.info.trace_id)
    return found


# Every table that can hold text of a document: their older versions are purged even when this
# run deleted nothing there (the scheduled pipeline may have, and the parse scratch table is
# emptied after each run but keeps the text in its history).
HOLDING_TEXT: tuple[TableSpec, ...] = (*BY_DOC_ID, SERVING_ANSWERS, BRONZE_DOCUMENTS, BRONZE_QUARANTINE)


def _purge_history(lakehouse: Lakehouse, report: ForgetReport) -> None:
    """Delete the data files that only older table versions (time travel) still reference.

    Zero retention also removes files a writer has written but not yet committed: run forget
    while no pipeline job writes to these tables."""
    if lakehouse.root is None:
        report.notes.append("managed tables: older table versions keep the rows until VACUUM runs past the "
                            "table's retention (7 days by default); run VACUUM on the tables listed above")
        return
    from deltalake import DeltaTable

    for spec in HOLDING_TEXT:
        location = Path(lakehouse.location(spec.name))
        if (location / "_delta_log").is_dir():
            DeltaTable(str(location)).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
            report.vacuumed.append(spec.name)
