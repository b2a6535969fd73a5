"""Every kind of bad input lands somewhere with its reason, and the good files land beside it."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pyspark.sql.functions as F
from chispa import assert_df_equality

from lakerag.ingest.bronze import ingest_bronze
from lakerag.settings import BronzeSettings, Settings
from lakerag.ingest.silver import run_silver
from lakerag.lakehouse.tables import BRONZE_QUARANTINE, SILVER_DOCUMENTS, SILVER_PARSE_FAILURES, SILVER_SECTIONS
from tests import bad_inputs
from tests.conftest import put, vanishing_on_read

RUN = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
# A memory bound that the hog trips quickly but above pypdf's own 75 MB decompression limit, so
# the bomb meets pypdf's limit first; the oversized file is over 1 MB.
SETTINGS = dataclasses.replace(
    Settings(),
    bronze=BronzeSettings(max_file_bytes=1_000_000),
    silver=dataclasses.replace(Settings().silver, max_parse_seconds=60, max_parse_memory_mb=128),
)

# file name -> (table it must end in, reason); reason None = parsed
EXPECTED = {
    "zero-byte.pdf": ("bronze_quarantine", "empty_file"),
    "not-a-pdf.pdf": ("bronze_quarantine", "not_pdf"),
    "latin1-notes.pdf": ("bronze_quarantine", "not_pdf"),
    "truncated.pdf": ("bronze_quarantine", "truncated"),
    "vanishing.pdf": ("bronze_quarantine", "vanished"),
    "oversized.pdf": ("bronze_quarantine", "too_large"),
    "encrypted.pdf": ("silver_parse_failures", "encrypted"),
    "image-only.pdf": ("silver_parse_failures", "no_text"),
    "huge-page-count.pdf": ("silver_parse_failures", "too_many_pages"),
    "decompression-bomb.pdf": ("silver_parse_failures", "resource_limit"),
    "memory-hog.pdf": ("silver_parse_failures", "memory_limit"),
    "broken-xref.pdf": ("silver_documents", None),
    "deep-outline.pdf": ("silver_documents", None),
    "non-utf-text.pdf": ("silver_documents", None),
    "good-outline.pdf": ("silver_documents", None),
    "good-4-pages.pdf": ("silver_documents", None),
}


def test_every_bad_input_ends_in_quarantine_or_a_failure_row_and_the_rest_lands(spark, lakehouse, landing):
    for name, content in bad_inputs.corpus(password="not-configured").items():
        put(landing, name, content)
    put(landing, "oversized.pdf", "GeoTopo-komprimiert.pdf")
    put(landing, "good-outline.pdf", "pdflatex-outline.pdf")
    put(landing, "good-4-pages.pdf", "pdflatex-4-pages.pdf")
    vanishing = put(landing, "vanishing.pdf", "minimal-document.pdf")

    with vanishing_on_read(vanishing):
        ingest_bronze(spark, lakehouse, str(landing), SETTINGS.bronze, run_time=RUN)
    report = run_silver(spark, lakehouse, SETTINGS, "sail", run_time=RUN)

    def outcomes(spec, reason):
        return spark.table(lakehouse.table(spec.name)).select("file_name", F.lit(spec.name).alias("table"), reason)

    landed = (outcomes(BRONZE_QUARANTINE, "reason")
              .unionByName(outcomes(SILVER_PARSE_FAILURES, "reason"))
              .unionByName(outcomes(SILVER_DOCUMENTS, F.lit(None).cast("string").alias("reason"))))
    expected = spark.createDataFrame([(name, table, reason) for name, (table, reason) in EXPECTED.items()],
                                     landed.schema)
    # exactly one row per file: nothing lost, nothing counted twice
    assert_df_equality(landed, expected, ignore_row_order=True, ignore_nullable=True)
    assert report.failed == {"encrypted": 1, "no_text": 1, "too_many_pages": 1, "resource_limit": 1,
                             "memory_limit": 1}

    documents = {r.file_name: r for r in spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).collect()}
    assert any("startxref" in w for w in documents["broken-xref.pdf"].warnings)
    assert any("outline ignored" in w for w in documents["deep-outline.pdf"].warnings)
    assert documents["good-outline.pdf"].warnings == []
    # the text with broken Unicode was stored, repaired, and every good document has sections
    sections = spark.table(lakehouse.table(SILVER_SECTIONS.name))
    repaired = sections.filter(F.col("doc_id") == documents["non-utf-text.pdf"].doc_id).first().text
    assert repaired.startswith("\ufffd lone surrogate, \U0001F600 a pair")
    with_sections = {r.doc_id for r in sections.select("doc_id").distinct().collect()}
    assert with_sections == {d.doc_id for d in documents.values()}
    # every failure says what to do or what limit it hit
    failures = spark.table(lakehouse.table(SILVER_PARSE_FAILURES.name)).collect()
    assert all(len(f.message) > 30 for f in failures)
