"""Bronze ingestion on the real engine and real Delta tables."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyspark.sql.functions as F
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable

from lakerag.ingest.bronze import ingest_bronze
from lakerag.lakehouse.engine import Lakehouse, spark_session
from lakerag.settings import BronzeSettings
from lakerag.lakehouse.tables import (
    BRONZE_DOCUMENTS,
    BRONZE_QUARANTINE,
    BRONZE_TABLES,
    TableSchemaMismatch,
    ensure_tables,
)
from tests.conftest import TEST_CATALOG, corpus_pdf, put, vanishing_on_read

SETTINGS = BronzeSettings(max_file_bytes=500_000)
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)


def ingest(spark, lakehouse, landing: Path, run: int = 0):
    return ingest_bronze(spark, lakehouse, str(landing), SETTINGS, run_time=T0 + timedelta(hours=run))


def rows(spark, lakehouse, spec, status: str | None = None):
    """A table's rows without the bytes (groups as text: Sail 0.7.2 cannot sort or hash arrays,
    which chispa's ignore_row_order needs), optionally only those with `status`."""
    df = spark.table(lakehouse.table(spec.name)).drop("content")
    if "groups" in df.columns:
        df = df.withColumn("groups", F.array_join("groups", ","))
    return df.filter(F.col("status") == status) if status else df


def delta_version(lakehouse, spec) -> int:
    return DeltaTable(lakehouse.location(spec.name)).version()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_bad_kind_lands_in_quarantine_with_its_reason(spark, lakehouse, landing):
    good = put(landing, "good.pdf", "minimal-document.pdf")
    put(landing, "empty.pdf", b"")
    put(landing, "notes.pdf", b"these are meeting notes, not a PDF\n")
    truncated = corpus_pdf("R-data.pdf").read_bytes()
    put(landing, "sub/dir/truncated.pdf", truncated[: len(truncated) // 2])
    put(landing, "huge.pdf", "GeoTopo-komprimiert.pdf")  # 1.8 MB, over the 500 kB limit
    vanishing = put(landing, "vanishing.pdf", "pdflatex-4-pages.pdf")

    with vanishing_on_read(vanishing):
        report = ingest(spark, lakehouse, landing)

    assert report.files_seen == 6
    quarantine = rows(spark, lakehouse, BRONZE_QUARANTINE).select("file_name", "reason", "status")
    expected = spark.createDataFrame(
        [("empty.pdf", "empty_file", "active"), ("notes.pdf", "not_pdf", "active"),
         ("truncated.pdf", "truncated", "active"), ("huge.pdf", "too_large", "active"),
         ("vanishing.pdf", "vanished", "active")],
        quarantine.schema,
    )
    assert_df_equality(quarantine, expected, ignore_row_order=True, ignore_nullable=True)
    documents = rows(spark, lakehouse, BRONZE_DOCUMENTS).select("doc_id", "source_path", "status")
    assert_df_equality(
        documents,
        spark.createDataFrame([(sha(good), str(good), "active")], documents.schema),
        ignore_nullable=True,
    )
    huge = spark.table(lakehouse.table(BRONZE_QUARANTINE.name)).filter("reason = 'too_large'").first()
    assert huge.content is None and huge.file_version.startswith("unread:")
    assert "max_file_bytes=500000" in huge.message


def test_every_file_seen_is_active_in_exactly_one_table(spark, lakehouse, landing):
    for name in ("minimal-document.pdf", "pdflatex-4-pages.pdf", "habibi.pdf"):
        put(landing, name, name)
    put(landing, "readme.txt", b"hello")
    put(landing, "empty.pdf", b"")
    report = ingest(spark, lakehouse, landing)
    listed = sorted(str(p) for p in landing.rglob("*") if p.is_file())
    active = [
        r.source_path
        for spec in BRONZE_TABLES
        for r in rows(spark, lakehouse, spec, "active").select("source_path").collect()
    ]
    assert report.files_seen == len(listed) == 5
    assert sorted(active) == listed  # each listed path once, none twice


def test_rerun_over_same_files_changes_nothing(spark, lakehouse, landing):
    put(landing, "a.pdf", "minimal-document.pdf")
    put(landing, "bad.pdf", b"nope")
    ingest(spark, lakehouse, landing, run=0)
    before = {spec.name: rows(spark, lakehouse, spec).toPandas() for spec in BRONZE_TABLES}
    versions = {spec.name: delta_version(lakehouse, spec) for spec in BRONZE_TABLES}

    report = ingest(spark, lakehouse, landing, run=1)

    assert not report.changed
    for spec in BRONZE_TABLES:
        assert delta_version(lakehouse, spec) == versions[spec.name]
        after = rows(spark, lakehouse, spec)
        assert_df_equality(after, spark.createDataFrame(before[spec.name], after.schema), ignore_row_order=True)


def test_changed_file_supersedes_old_version_and_time_travel_shows_it(spark, lakehouse, landing):
    target = put(landing, "doc.pdf", "minimal-document.pdf")
    old_id = sha(target)
    ingest(spark, lakehouse, landing, run=0)
    version_before = delta_version(lakehouse, BRONZE_DOCUMENTS)

    put(landing, "doc.pdf", "pdflatex-4-pages.pdf")
    new_id = sha(target)
    report = ingest(spark, lakehouse, landing, run=1)

    assert report.changes == {("bronze_documents", "new"): 1, ("bronze_documents", "superseded"): 1}
    got = rows(spark, lakehouse, BRONZE_DOCUMENTS).select("doc_id", "status", "first_seen_at", "status_changed_at")
    t0, t1 = T0.replace(tzinfo=None), (T0 + timedelta(hours=1)).replace(tzinfo=None)
    expected = spark.createDataFrame(
        [(old_id, "superseded", t0, t1), (new_id, "active", t1, t1)], got.schema
    )
    assert_df_equality(got, expected, ignore_row_order=True)

    previous = spark.read.format("delta").option("versionAsOf", version_before).load(
        lakehouse.location(BRONZE_DOCUMENTS.name)
    )
    assert [(r.doc_id, r.status) for r in previous.collect()] == [(old_id, "active")]


def test_deleted_file_becomes_tombstone_and_returns(spark, lakehouse, landing):
    keep = put(landing, "keep.pdf", "minimal-document.pdf")
    gone = put(landing, "gone.pdf", "habibi.pdf")
    gone_bytes = gone.read_bytes()
    ingest(spark, lakehouse, landing, run=0)

    gone.unlink()
    report = ingest(spark, lakehouse, landing, run=1)
    assert report.changes == {("bronze_documents", "deleted"): 1}
    statuses = rows(spark, lakehouse, BRONZE_DOCUMENTS).select("source_path", "status")
    assert_df_equality(
        statuses,
        spark.createDataFrame([(str(keep), "active"), (str(gone), "deleted")], statuses.schema),
        ignore_row_order=True,
    )

    gone.write_bytes(gone_bytes)
    report = ingest(spark, lakehouse, landing, run=2)
    assert report.changes == {("bronze_documents", "reactivated"): 1}
    assert rows(spark, lakehouse, BRONZE_DOCUMENTS, "deleted").isEmpty()


def test_file_that_turns_bad_moves_to_quarantine_and_back(spark, lakehouse, landing):
    doc = put(landing, "doc.pdf", "minimal-document.pdf")
    ingest(spark, lakehouse, landing, run=0)
    good_bytes = doc.read_bytes()

    doc.write_bytes(good_bytes[:1000])  # an interrupted copy
    report = ingest(spark, lakehouse, landing, run=1)
    assert report.changes == {("bronze_documents", "superseded"): 1, ("bronze_quarantine", "new"): 1}

    doc.write_bytes(good_bytes)
    report = ingest(spark, lakehouse, landing, run=2)
    assert report.changes == {("bronze_documents", "reactivated"): 1, ("bronze_quarantine", "superseded"): 1}
    assert rows(spark, lakehouse, BRONZE_QUARANTINE, "active").isEmpty()


@pytest.mark.slow
def test_tables_are_reregistered_after_engine_restart(spark, lakehouse, landing):
    put(landing, "a.pdf", "minimal-document.pdf")
    ingest(spark, lakehouse, landing)
    expected = rows(spark, lakehouse, BRONZE_DOCUMENTS).toPandas()

    # A second engine starts with an empty catalog, like Sail after a restart.
    with spark_session("sail", lakehouse) as restarted:
        assert not restarted.catalog.tableExists(lakehouse.table(BRONZE_DOCUMENTS.name))
        ensure_tables(restarted, lakehouse)
        got = rows(restarted, lakehouse, BRONZE_DOCUMENTS)
        assert_df_equality(got, restarted.createDataFrame(expected, got.schema))
        assert not ingest(restarted, lakehouse, landing, run=1).changed


def test_schema_drift_is_refused_with_a_clear_error(spark, lake_root, tmp_path):
    lakehouse = Lakehouse(TEST_CATALOG, "drift", tmp_path)
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {TEST_CATALOG}.drift")
    spark.createDataFrame([("x",)], "doc_id string").write.format("delta").save(
        lakehouse.location(BRONZE_DOCUMENTS.name)
    )
    with pytest.raises(TableSchemaMismatch, match="bronze_documents.*move the old table away"):
        ensure_tables(spark, lakehouse, [BRONZE_DOCUMENTS])


def test_three_level_names_and_utc(spark, lakehouse):
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.sql(f"SELECT count(*) AS n FROM {lakehouse.table('bronze_documents')}").first().n == 0


def test_a_table_from_before_permissions_gains_the_groups_column_and_the_next_run_labels_it(
        spark, lake_root, tmp_path, landing):
    import pyarrow as pa
    from deltalake import write_deltalake

    from lakerag.lakehouse.tables import arrow_schema
    from lakerag.settings import AccessSettings

    lakehouse = Lakehouse(TEST_CATALOG, "upgrade", tmp_path)
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {TEST_CATALOG}.upgrade")
    put(landing, "hr/a.pdf", "minimal-document.pdf")
    # The layout before issue 21, written by another process (delta-rs here): no groups column.
    old = arrow_schema(BRONZE_DOCUMENTS, BRONZE_DOCUMENTS.schema.fields[:-1])
    content = (landing / "hr" / "a.pdf").read_bytes()
    row = {"doc_id": hashlib.sha256(content).hexdigest(), "source_path": str(landing / "hr" / "a.pdf"),
           "file_name": "a.pdf", "size_bytes": len(content), "modification_time": None, "content": content,
           "status": "active", "first_seen_at": T0, "status_changed_at": T0}
    write_deltalake(lakehouse.location(BRONZE_DOCUMENTS.name), pa.Table.from_pylist([row], old))
    ensure_tables(spark, lakehouse, BRONZE_TABLES)  # adds the column instead of refusing the table
    [row] = spark.table(lakehouse.table(BRONZE_DOCUMENTS.name)).collect()
    assert row.groups is None and row.status == "active"
    report = ingest_bronze(spark, lakehouse, str(landing), SETTINGS, run_time=T0 + timedelta(hours=1),
                           access=AccessSettings(rules={"hr/": ["hr"]}))
    assert report.changes == {(BRONZE_DOCUMENTS.name, "relabelled"): 1}
    assert spark.table(lakehouse.table(BRONZE_DOCUMENTS.name)).first().groups == ["hr"]
