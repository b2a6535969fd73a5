"""A job SIGKILLed between two of its Delta commits, then run again, leaves exactly the tables a
clean run leaves: no duplicates, no lost rows.

The job runs as a real `lakerag` process on the test's tables; the test watches the table's
Delta log and kills the process the moment the first commit lands, so the kill falls between
commits that belong together (silver: sections before chunks and documents; gold: stale
vectors deleted before new ones are inserted).
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from lakerag.ingest.bronze import ingest_bronze
from lakerag.lakehouse.engine import Lakehouse
from lakerag.enrich.embeddings import run_gold
from lakerag.settings import Settings
from lakerag.ingest.silver import run_silver
from lakerag.lakehouse.tables import (
    GOLD_EMBEDDINGS,
    SILVER_CHUNKS,
    SILVER_DOCUMENTS,
    SILVER_PARSE_FAILURES,
    SILVER_SECTIONS,
    ensure_tables,
)
from tests.conftest import TEST_CATALOG, assert_same_rows, put

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RUN = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
SETTINGS = Settings()


def commits(location: str) -> int:
    """Number of commits in a Delta table's log."""
    return len(list(Path(location, "_delta_log").glob("[0-9]*.json")))


def run_killed_after_first_commit(command: str, lakehouse: Lakehouse, watched: str) -> None:
    """Run `lakerag <command>` on `lakehouse` and SIGKILL it as soon as table `watched` gets a commit."""
    location = lakehouse.location(watched)
    before = commits(location)
    process = subprocess.Popen(
        [sys.executable, "-m", "lakerag.cli", command, "--lake-root", str(lakehouse.root),
         "--catalog", lakehouse.catalog, "--schema", lakehouse.schema],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while commits(location) == before:
        if process.poll() is not None:
            pytest.fail(f"{command} ended before its first {watched} commit:\n{process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{command} made no {watched} commit in 300 s")
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    # Only the job's main process is killed; its parsing workers notice and exit, which closes
    # the output pipes they inherited (communicate would wait forever on orphans).
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL


def second_lakehouse(spark, lakehouse: Lakehouse, suffix: str) -> Lakehouse:
    """Another schema beside `lakehouse`, with its tables."""
    other = Lakehouse(TEST_CATALOG, f"{lakehouse.schema}_{suffix}", lakehouse.root)
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {other.catalog}.{other.schema}")
    ensure_tables(spark, other)
    return other


def rows(spark, lakehouse: Lakehouse, spec, drop: tuple[str, ...] = ()):
    return spark.table(lakehouse.table(spec.name)).drop(*drop)


def build(spark, lakehouse: Lakehouse, landing: Path, gold: bool = False) -> None:
    """Ingest and silver (and gold) in this process: the clean run."""
    ingest_bronze(spark, lakehouse, str(landing), SETTINGS.bronze, run_time=RUN)
    run_silver(spark, lakehouse, SETTINGS, "sail", run_time=RUN)
    if gold:
        run_gold(spark, lakehouse, SETTINGS, run_time=RUN)


def test_silver_killed_between_commits_then_rerun_equals_a_clean_run(spark, lakehouse, landing):
    put(landing, "outline.pdf", "pdflatex-outline.pdf")
    put(landing, "faq.pdf", "debian-faq.pdf")
    put(landing, "scan.pdf", "imagemagick-images.pdf")
    ingest_bronze(spark, lakehouse, str(landing), SETTINGS.bronze, run_time=RUN)

    run_killed_after_first_commit("build-silver", lakehouse, SILVER_SECTIONS.name)
    # killed in the middle: sections landed, their documents were not marked done
    assert not rows(spark, lakehouse, SILVER_SECTIONS).isEmpty()
    assert rows(spark, lakehouse, SILVER_DOCUMENTS).isEmpty()

    run_silver(spark, lakehouse, SETTINGS, "sail", run_time=RUN)
    clean = second_lakehouse(spark, lakehouse, "clean")
    build(spark, clean, landing)
    for spec, times in ((SILVER_DOCUMENTS, ("parsed_at",)), (SILVER_SECTIONS, ()), (SILVER_CHUNKS, ()),
                        (SILVER_PARSE_FAILURES, ("failed_at",))):
        assert_same_rows(rows(spark, lakehouse, spec, times), rows(spark, clean, spec, times), list(spec.key))
    assert rows(spark, lakehouse, SILVER_SECTIONS).count() > 100


def test_gold_killed_between_delete_and_insert_then_rerun_equals_a_clean_run(spark, lakehouse, landing, tmp_path):
    put(landing, "outline.pdf", "pdflatex-outline.pdf")
    changing = put(landing, "changing.pdf", "pdflatex-4-pages.pdf")
    build(spark, lakehouse, landing, gold=True)
    shutil.copyfile(REPO / "data" / "corpus" / "manuals" / "R-data.pdf", changing)  # new version: new chunks
    build(spark, lakehouse, landing)

    run_killed_after_first_commit("embed-gold", lakehouse, GOLD_EMBEDDINGS.name)
    # killed in the middle: the old version's vectors are gone, the new version's not yet there
    embedded = {r.doc_id for r in rows(spark, lakehouse, GOLD_EMBEDDINGS).select("doc_id").distinct().collect()}
    documents = {r.file_name: r.doc_id for r in rows(spark, lakehouse, SILVER_DOCUMENTS).collect()}
    assert embedded == {documents["outline.pdf"]}

    run_gold(spark, lakehouse, SETTINGS, run_time=RUN)
    clean = second_lakehouse(spark, lakehouse, "clean")
    build(spark, clean, landing, gold=True)
    key = list(GOLD_EMBEDDINGS.key)
    actual = rows(spark, lakehouse, GOLD_EMBEDDINGS, ("embedded_at",))
    expected = rows(spark, clean, GOLD_EMBEDDINGS, ("embedded_at",))
    # no duplicates, no lost vectors: equal rows, and vectors equal up to float noise of batching
    assert actual.count() == actual.select(*key).distinct().count()
    assert_same_rows(actual.drop("vector"), expected.drop("vector"), key)
    np.testing.assert_allclose(np.array([r.vector for r in actual.orderBy(*key).collect()]),
                               np.array([r.vector for r in expected.orderBy(*key).collect()]), atol=1e-5)
    assert set(documents.values()) == {r.doc_id for r in actual.select("doc_id").distinct().collect()}
