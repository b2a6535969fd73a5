"""Human-readable summaries of what the pipeline holds, printed by the CLI and the demo."""
from __future__ import annotations

import pyspark.sql.functions as F
from pyspark.sql import SparkSession

from lakerag.ingest.bronze import IngestReport
from lakerag.lakehouse.engine import Lakehouse
from lakerag.ingest.silver import SilverReport
from lakerag.lakehouse.tables import (
    ACTIVE,
    BRONZE_DOCUMENTS,
    BRONZE_QUARANTINE,
    SILVER_CHUNKS,
    SILVER_DOCUMENTS,
    SILVER_PARSE_FAILURES,
    SILVER_SECTION_LINKS,
    SILVER_SECTIONS,
)


def print_bronze_summary(spark: SparkSession, lakehouse: Lakehouse, report: IngestReport) -> None:
    """Print this run's changes, then the active documents and quarantined files."""
    print(f"\nfiles seen: {report.files_seen}")
    if report.changed:
        for (table, kind), n in sorted(report.changes.items()):
            print(f"  {table:<18} {kind:<12} {n:>5}")
    else:
        print("  no changes: bronze tables left as they were")
    documents = spark.table(lakehouse.table(BRONZE_DOCUMENTS.name))
    quarantine = spark.table(lakehouse.table(BRONZE_QUARANTINE.name))
    print(f"\n{lakehouse.table(BRONZE_DOCUMENTS.name)} (active):")
    (documents.filter(F.col("status") == ACTIVE)
     .select("file_name", "size_bytes", F.substring("doc_id", 1, 12).alias("doc_id"))
     .orderBy("file_name").show(200, truncate=False))
    print(f"{lakehouse.table(BRONZE_QUARANTINE.name)} (active):")
    (quarantine.filter(F.col("status") == ACTIVE)
     .select("file_name", "reason", "message")
     .orderBy("file_name").show(200, truncate=70))
    counts = {
        name: {r["status"]: r["n"] for r in spark.table(lakehouse.table(name)).groupBy("status")
               .agg(F.count("*").alias("n")).collect()}
        for name in (BRONZE_DOCUMENTS.name, BRONZE_QUARANTINE.name)
    }
    for name, by_status in counts.items():
        print(f"{name}: " + ", ".join(f"{s}={n}" for s, n in sorted(by_status.items())) if by_status
              else f"{name}: empty")


def print_silver_summary(spark: SparkSession, lakehouse: Lakehouse, report: SilverReport) -> None:
    """Print this run's silver changes, then documents, chunk counts and parse failures."""
    print(f"\nparsed: {report.parsed}  failed: {sum(report.failed.values())} {report.failed or ''}  "
          f"removed documents: {report.removed_documents}  sections added: {report.sections_added}")
    print(f"chunks added: {report.chunks_added or 0}  chunks removed: {report.chunks_removed}")
    if report.links_added or report.unresolved:
        print(f"section links added: {report.links_added}  reaching no section of their document (not linked): "
              f"{report.unresolved or 0}")
    if report.relabelled:
        print(f"documents re-labelled (access.rules or a moved file; not parsed again): {report.relabelled}")
    if not report.changed:
        print("no changes: silver tables left as they were")
    sections = spark.table(lakehouse.table(SILVER_SECTIONS.name)).groupBy("doc_id").agg(
        F.count("*").alias("sections"))
    resolved = F.col("to_section_id").isNotNull()
    links = spark.table(lakehouse.table(SILVER_SECTION_LINKS.name)).groupBy("doc_id").agg(
        F.count_if(resolved & (F.col("kind") == "link")).alias("links"),
        F.count_if(resolved & (F.col("kind") == "reference")).alias("references"),
        F.count_if(~resolved & (F.col("kind") == "link")).alias("unresolved_links"),
        F.count_if(~resolved & (F.col("kind") == "reference")).alias("unresolved_references"))
    print(f"\n{lakehouse.table(SILVER_DOCUMENTS.name)} (links and references: resolved to a section of the document):")
    (spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).join(sections, "doc_id", "left").join(links, "doc_id", "left")
     .select("file_name", "title", "language", "page_count", "outline_entries", "sections",
             *[F.coalesce(name, F.lit(0)).alias(name) for name in ("links", "references", "unresolved_links",
                                                           "unresolved_references")])
     .orderBy("file_name").show(200, truncate=40))
    print(f"{lakehouse.table(SILVER_CHUNKS.name)} by strategy:")
    (spark.table(lakehouse.table(SILVER_CHUNKS.name)).groupBy("strategy")
     .agg(F.count("*").alias("chunks"), F.round(F.avg("token_count"), 1).alias("avg_tokens"),
          F.max("token_count").alias("max_tokens"))
     .orderBy("strategy").show(truncate=False))
    print(f"{lakehouse.table(SILVER_PARSE_FAILURES.name)}:")
    (spark.table(lakehouse.table(SILVER_PARSE_FAILURES.name)).select("file_name", "reason", "message")
     .orderBy("file_name").show(200, truncate=70))
