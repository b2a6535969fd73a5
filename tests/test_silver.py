"""The silver job on the real engine: parse, chunk, fail softly, and stay incremental."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pyspark.sql.functions as F
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable

from lakerag.ingest.bronze import ingest_bronze
from lakerag.lakehouse.engine import Lakehouse
from lakerag.settings import Settings
from lakerag.ingest.silver import PASSWORDS_ENV, run_silver
from lakerag.lakehouse.tables import (
    SILVER_CHUNKS,
    SILVER_DOCUMENTS,
    SILVER_PARSE_FAILURES,
    SILVER_SECTIONS,
    ensure_tables,
)
from tests.conftest import assert_same_rows, put
from tests.test_section_links import linked_guide

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
SILVER = (SILVER_DOCUMENTS, SILVER_SECTIONS, SILVER_CHUNKS, SILVER_PARSE_FAILURES)
MALFORMED = b"%PDF-1.7\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


def build(spark, lakehouse, landing, settings: Settings = Settings(), run: int = 0):
    """Ingest the landing folder and run silver, as the workflow does."""
    at = T0 + timedelta(hours=run)
    ingest_bronze(spark, lakehouse, str(landing), settings.bronze, run_time=at)
    return run_silver(spark, lakehouse, settings, "sail", run_time=at)


def table(spark, lakehouse, spec):
    return spark.table(lakehouse.table(spec.name))


def versions(lakehouse) -> dict[str, int]:
    return {spec.name: DeltaTable(lakehouse.location(spec.name)).version() for spec in SILVER}


@pytest.fixture
def small_corpus(landing):
    put(landing, "outline.pdf", "pdflatex-outline.pdf")
    put(landing, "columns.pdf", "apsguide4-2.pdf")
    put(landing, "locked.pdf", "libreoffice-writer-password.pdf")
    put(landing, "scan.pdf", "imagemagick-images.pdf")
    put(landing, "broken.pdf", MALFORMED)
    return landing


def test_parses_chunks_and_records_failures(spark, lakehouse, small_corpus):
    report = build(spark, lakehouse, small_corpus)

    assert report.parsed == 2
    assert report.failed == {"encrypted": 1, "no_text": 1, "malformed": 1}
    failures = table(spark, lakehouse, SILVER_PARSE_FAILURES).select("file_name", "reason")
    expected = spark.createDataFrame(
        [("locked.pdf", "encrypted"), ("scan.pdf", "no_text"), ("broken.pdf", "malformed")], failures.schema
    )
    assert_df_equality(failures, expected, ignore_row_order=True)

    documents = table(spark, lakehouse, SILVER_DOCUMENTS).select("file_name", "page_count", "outline_entries", "language")
    expected = spark.createDataFrame([("outline.pdf", 4, 9, "en"), ("columns.pdf", 5, 0, "en")], documents.schema)
    assert_df_equality(documents, expected, ignore_row_order=True)

    sections = table(spark, lakehouse, SILVER_SECTIONS)
    chunks = table(spark, lakehouse, SILVER_CHUNKS)
    # every chunk belongs to a section of its document, within the model's window, tagged
    orphans = chunks.join(sections, ["section_id", "doc_id"], "left_anti")
    assert orphans.isEmpty()
    assert chunks.agg(F.max("token_count")).first()[0] <= 254
    assert chunks.filter(F.col("tags")["file_name"].isNull()).isEmpty()
    per_doc = {(r.doc_id, r.strategy) for r in chunks.select("doc_id", "strategy").distinct().collect()}
    assert len(per_doc) == 2 * 3  # both documents, all three strategies
    # parents are sections of the same document one level up
    parents = sections.alias("c").join(
        sections.alias("p"), F.col("c.parent_section_id") == F.col("p.section_id"))
    assert parents.filter((F.col("c.doc_id") != F.col("p.doc_id")) | (F.col("p.level") >= F.col("c.level"))).isEmpty()
    assert sections.filter("level > 1 AND parent_section_id IS NULL").isEmpty()


def test_rerun_over_unchanged_bronze_writes_nothing(spark, lakehouse, small_corpus):
    build(spark, lakehouse, small_corpus, run=0)
    before = versions(lakehouse)
    report = build(spark, lakehouse, small_corpus, run=1)
    assert not report.changed
    assert versions(lakehouse) == before


def test_changed_document_is_the_only_one_reparsed(spark, lakehouse, landing):
    put(landing, "keep.pdf", "pdflatex-outline.pdf")
    put(landing, "edit.pdf", "minimal-document.pdf")
    build(spark, lakehouse, landing, run=0)
    keep_id = table(spark, lakehouse, SILVER_DOCUMENTS).filter("file_name = 'keep.pdf'").first().doc_id
    kept_before = {spec.name: table(spark, lakehouse, spec).filter(F.col("doc_id") == keep_id).toPandas()
                   for spec in (SILVER_SECTIONS, SILVER_CHUNKS)}

    put(landing, "edit.pdf", "pdflatex-4-pages.pdf")
    report = build(spark, lakehouse, landing, run=1)

    assert (report.parsed, report.removed_documents) == (1, 1)
    for spec in (SILVER_SECTIONS, SILVER_CHUNKS):
        after = table(spark, lakehouse, spec).filter(F.col("doc_id") == keep_id)
        assert_same_rows(after, spark.createDataFrame(kept_before[spec.name], after.schema), list(spec.key))
    files = [r.file_name for r in table(spark, lakehouse, SILVER_DOCUMENTS).select("file_name").collect()]
    assert sorted(files) == ["edit.pdf", "keep.pdf"]
    assert table(spark, lakehouse, SILVER_DOCUMENTS).filter("file_name = 'edit.pdf'").first().page_count == 4


def test_deleted_document_leaves_no_rows(spark, lakehouse, landing):
    put(landing, "keep.pdf", "minimal-document.pdf")
    gone = put(landing, "gone.pdf", "pdflatex-outline.pdf")
    build(spark, lakehouse, landing, run=0)
    gone.unlink()
    report = build(spark, lakehouse, landing, run=1)
    assert report.removed_documents == 1
    names = {r.file_name for r in table(spark, lakehouse, SILVER_DOCUMENTS).select("file_name").collect()}
    assert names == {"keep.pdf"}
    for spec in (SILVER_SECTIONS, SILVER_CHUNKS, SILVER_PARSE_FAILURES):
        assert table(spark, lakehouse, spec).join(
            table(spark, lakehouse, SILVER_DOCUMENTS), "doc_id", "left_anti").isEmpty()


def test_changing_one_strategy_rebuilds_only_that_strategy(spark, lakehouse, landing):
    put(landing, "a.pdf", "pdflatex-outline.pdf")
    build(spark, lakehouse, landing, run=0)
    before = table(spark, lakehouse, SILVER_CHUNKS).toPandas()

    settings = Settings(silver=dataclasses.replace(Settings().silver, fixed_tokens=64, fixed_overlap=8))
    report = build(spark, lakehouse, landing, settings=settings, run=1)

    old_fixed = int((before.strategy == "fixed").sum())
    assert report.chunks_removed == old_fixed
    assert set(report.chunks_added) == {"fixed"} and report.chunks_added["fixed"] > old_fixed
    others = table(spark, lakehouse, SILVER_CHUNKS).filter("strategy != 'fixed'")
    assert_same_rows(others, spark.createDataFrame(before[before.strategy != "fixed"], others.schema), ["chunk_id"])
    assert table(spark, lakehouse, SILVER_CHUNKS).filter("strategy = 'fixed'").agg(
        F.max("token_count")).first()[0] <= 66


def test_dropping_a_strategy_removes_its_chunks(spark, lakehouse, landing):
    put(landing, "a.pdf", "minimal-document.pdf")
    build(spark, lakehouse, landing, run=0)
    settings = Settings(silver=dataclasses.replace(Settings().silver, strategies=("section",)))
    build(spark, lakehouse, landing, settings=settings, run=1)
    strategies = {r.strategy for r in table(spark, lakehouse, SILVER_CHUNKS).select("strategy").distinct().collect()}
    assert strategies == {"section"}


def test_serial_and_parallel_parsing_agree(spark, lakehouse, small_corpus, lake_root):
    build(spark, lakehouse, small_corpus)  # auto: one process per core
    serial = Lakehouse(lakehouse.catalog, f"{lakehouse.schema}_serial", lake_root)
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {serial.catalog}.{serial.schema}")
    ensure_tables(spark, serial)
    build(spark, serial, small_corpus, settings=Settings(silver=dataclasses.replace(Settings().silver, parse_workers=1)))
    for spec in (SILVER_SECTIONS, SILVER_CHUNKS):
        assert_same_rows(table(spark, serial, spec), table(spark, lakehouse, spec), list(spec.key))


def test_configured_password_opens_the_encrypted_pdf(spark, lakehouse, landing, monkeypatch):
    put(landing, "locked.pdf", "libreoffice-writer-password.pdf")
    monkeypatch.setenv(PASSWORDS_ENV, "not-this-one\nopenpassword")
    report = build(spark, lakehouse, landing)
    assert (report.parsed, report.failed) == (1, {})


def test_the_report_counts_links_and_the_references_that_name_no_section(spark, lakehouse, landing):
    put(landing, "guide.pdf", linked_guide())

    report = build(spark, lakehouse, landing)

    assert (report.links_added["link"], report.links_added["reference"]) == (1, 1)
    assert report.unresolved == {"reference": 1}  # "Section 9.9 of the old guide"


def test_tables_made_by_the_version_before_ocr_tables_and_boxes_are_widened_or_recreated(spark, lakehouse):
    from pyspark.sql.types import ArrayType, StructField, StructType

    from lakerag.lakehouse.tables import CHUNK_FIELDS, SILVER_PARSE_STAGING

    def without(spec, *names, chunks=None):
        fields = [f for f in spec.schema.fields if f.name not in names]
        if chunks is not None:
            fields = [StructField(f.name, chunks, f.nullable, f.metadata) if f.name == "chunks" else f for f in fields]
        return dataclasses.replace(spec, schema=StructType(fields))

    old = Lakehouse(lakehouse.catalog, f"{lakehouse.schema}_old", lakehouse.root)
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {old.catalog}.{old.schema}")
    older_chunks = ArrayType(StructType(CHUNK_FIELDS[:-2]), False)
    ensure_tables(spark, old, [without(SILVER_DOCUMENTS, "ocr_pages", "layout_pages"),
                               without(SILVER_SECTIONS, "table_boxes"), without(SILVER_CHUNKS, "chunk_kind", "bbox"),
                               without(SILVER_PARSE_STAGING, "ocr_pages", "layout_pages", chunks=older_chunks)])
    current = [SILVER_DOCUMENTS, SILVER_SECTIONS, SILVER_CHUNKS, SILVER_PARSE_STAGING]
    ensure_tables(spark, old, current)
    for spec in current:  # the scratch one recreated
        assert spark.table(old.table(spec.name)).schema.simpleString() == spec.schema.simpleString()
