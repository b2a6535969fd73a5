"""Deleting a source file, or `forget`ting a document, removes everything made from it: sections,
chunks, summaries, vectors, eval questions and index entries (and, for forget, bronze rows,
serving answers that cite it, the landing file and the table history)."""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import pandas as pd
import pyspark.sql.functions as F
import pytest
from deltalake import DeltaTable

from lakerag.ingest.bronze import ingest_bronze
from lakerag.evaluation.question_sets import run_generation
from lakerag.lakehouse.forget import NoSuchDocument, forget
from lakerag.enrich.embeddings import run_gold
from lakerag.chain.llm import make_llm
from lakerag.chain.rag import RagChain
from lakerag.retrieval.index_files import latest_index
from lakerag.retrieval.live_index import LiveIndex
from lakerag.serving.loadtest import LocalChain, serve_in_background
from lakerag.serving.server import create_app
from lakerag.enrich.index_build import build_index
from lakerag.settings import Settings
from lakerag.ingest.silver import run_silver
from lakerag.enrich.summaries import run_summaries
from lakerag.lakehouse.tables import (
    BRONZE_DOCUMENTS,
    EVAL_QUESTIONS,
    GOLD_EMBEDDINGS,
    SERVING_ANSWERS,
    SILVER_CHUNKS,
    SILVER_DOCUMENTS,
    SILVER_PARSE_STAGING,
    SILVER_SECTION_LINKS,
    SILVER_SECTION_SUMMARIES,
    SILVER_SECTIONS,
)
from tests.conftest import http_call, put
from tests.scripted_http import ScriptedServer, served_settings

pytestmark = pytest.mark.slow

DERIVED = (SILVER_DOCUMENTS, SILVER_SECTIONS, SILVER_CHUNKS, SILVER_SECTION_LINKS, SILVER_SECTION_SUMMARIES,
           GOLD_EMBEDDINGS, EVAL_QUESTIONS)
SUMMARY = json.dumps({"summary": "The section explains how outlines are written with hyperref.", "title": "Outlines",
                      "keywords": ["outline"], "questions": ["How do I add bookmarks to a PDF?"]})
PAIRS = json.dumps([{"style": "factual", "question": "What does the section say about outlines?",
                     "answer": "It says how outlines are written."}])


def run_pipeline(spark, lakehouse, landing: Path, index_root: Path) -> None:
    """Every scheduled step, with the LLM steps answered by a scripted endpoint."""
    with ScriptedServer([(200, SUMMARY)] * 40 + [(200, PAIRS)] * 60) as server:
        settings = served_settings(server, max_sections=0)
        settings = dataclasses.replace(settings, evaluation=dataclasses.replace(
            settings.evaluation, max_sections=0, min_chars=200, seed_examples=()))
        ingest_bronze(spark, lakehouse, str(landing), settings.bronze)
        run_silver(spark, lakehouse, settings, "sail")
        run_summaries(spark, lakehouse, settings)
        # the generation requests come after the summary ones: skip the summary replies left
        server.replies = [r for r in server.replies if r[1] == PAIRS]
        run_generation(spark, lakehouse, settings)
        run_gold(spark, lakehouse, settings)
        build_index(spark, lakehouse, settings, index_root)


def doc_id_of(spark, lakehouse, file_name: str) -> str:
    return (spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).filter(F.col("file_name") == file_name)
            .first().doc_id)


def rows_of(spark, lakehouse, spec, doc_id: str) -> int:
    return spark.table(lakehouse.table(spec.name)).filter(F.col("doc_id") == doc_id).count()


def ask_endpoint(base: str, question: str) -> dict:
    status, _, raw = http_call(base + "/invocations", json.dumps({"input": [{"role": "user", "content": question}]}).encode())
    assert status == 200, raw
    return json.loads(raw)


def served_docs(base: str) -> set[str]:
    return {d["doc_id"] for d in json.loads(http_call(base + "/api/documents")[2])}


def indexed_docs(index_root: Path) -> set[str]:
    return set(pd.read_parquet(latest_index(index_root, Settings()) / "chunks.parquet")["doc_id"])


@pytest.fixture
def built(spark, lakehouse, landing, tmp_path):
    """Two documents through the whole pipeline; returns (doc_id to remove, doc_id to keep, index root)."""
    put(landing, "outline.pdf", "pdflatex-outline.pdf")
    put(landing, "other.pdf", "pdflatex-4-pages.pdf")
    index_root = tmp_path / "indexes"
    run_pipeline(spark, lakehouse, landing, index_root)
    gone, kept = doc_id_of(spark, lakehouse, "outline.pdf"), doc_id_of(spark, lakehouse, "other.pdf")
    # the document to remove is in every table and in the index (else the test proves nothing)
    for spec in DERIVED:
        assert rows_of(spark, lakehouse, spec, gone) > 0, spec.name
    assert {gone, kept} <= indexed_docs(index_root)
    return gone, kept, index_root


def test_a_deleted_source_file_leaves_nothing_after_the_next_run(spark, lakehouse, landing, built):
    gone, kept, index_root = built
    (landing / "outline.pdf").unlink()
    run_pipeline(spark, lakehouse, landing, index_root)
    for spec in DERIVED:
        assert rows_of(spark, lakehouse, spec, gone) == 0, spec.name
    assert rows_of(spark, lakehouse, SILVER_SECTIONS, kept) > 0
    assert indexed_docs(index_root) == {kept}
    assert spark.table(lakehouse.table(SILVER_PARSE_STAGING.name)).isEmpty()  # scratch holds no text


def test_forget_removes_a_document_everywhere_now_and_says_what_it_removed(spark, lakehouse, landing, built,
                                                                          mlflow_store):
    gone, kept, index_root = built
    answer = {"question_id": "q1", "question": "How are outlines written?", "answer": "With hyperref [1].",
              "citations": [{"source": 1, "title": "t", "file_name": "outline.pdf", "doc_id": gone, "section_id": "s",
                             "section": "Outlines", "page_start": 1, "page_end": 1}],
              "model_uri": "models:/m@champion", "model_version": "1", "index_version": "v1", "prompt_tokens": 1,
              "completion_tokens": 1,
              "latency_s": 1.0, "error": None, "answered_at": datetime.now(timezone.utc)}
    spark.createDataFrame([answer], SERVING_ANSWERS.schema).write.insertInto(lakehouse.table(SERVING_ANSWERS.name))
    sections_before = DeltaTable(lakehouse.location(SILVER_SECTIONS.name)).version()

    preview = forget(spark, lakehouse, Settings(), "outline.pdf", index_root, dry_run=True)
    assert rows_of(spark, lakehouse, SILVER_SECTIONS, gone) > 0 and (landing / "outline.pdf").exists()

    # a running endpoint, registered before the forget, follows the index (refresh every search)
    with ScriptedServer([(200, "Outlines are written with hyperref [1].")] * 4) as llm:
        settings = dataclasses.replace(served_settings(llm, max_sections=0), retrieval=dataclasses.replace(
            Settings().retrieval, index_refresh_s=0))
        chain = RagChain(LiveIndex.from_settings(settings, index_root), make_llm(settings.llm), settings.chain)
        with serve_in_background(create_app(LocalChain(chain), settings.chain, "test")) as base:
            before = ask_endpoint(base, "How are outlines written with hyperref?")
            assert gone in served_docs(base)
            mlflow.flush_trace_async_logging()
            experiment = [mlflow.get_experiment_by_name("lakerag-test").experiment_id]
            report = forget(spark, lakehouse, Settings(), "outline.pdf", index_root, experiment_ids=experiment)
            after = ask_endpoint(base, "How are outlines written with hyperref?")
            assert gone not in served_docs(base) and kept in served_docs(base)
    answered_from = {c["section_id"] for c in after["custom_outputs"]["contexts"]}
    assert answered_from.isdisjoint(spark.table(lakehouse.table(SILVER_SECTIONS.name)).filter(
        F.col("doc_id") == gone).select("section_id").toPandas()["section_id"]) and answered_from
    assert all(c["doc_id"] != gone for c in after["custom_outputs"]["citations"])
    assert after["custom_outputs"]["index"]["version"] != before["custom_outputs"]["index"]["version"]
    # the trace of the answer that retrieved the document is erased with it; the later one stays
    mlflow.flush_trace_async_logging()
    assert report.traces == {experiment[0]: [before["custom_outputs"]["trace_id"]]}
    assert mlflow.get_trace(before["custom_outputs"]["trace_id"]) is None
    assert mlflow.get_trace(after["custom_outputs"]["trace_id"]) is not None
    assert report.doc_ids == [gone] and report.rows == preview.rows
    assert set(report.rows) == {s.name for s in DERIVED} | {BRONZE_DOCUMENTS.name, SERVING_ANSWERS.name}
    for spec in DERIVED:
        assert rows_of(spark, lakehouse, spec, gone) == 0, spec.name
    assert spark.table(lakehouse.table(SERVING_ANSWERS.name)).isEmpty()
    assert spark.table(lakehouse.table(BRONZE_DOCUMENTS.name)).filter(F.col("doc_id") == gone).isEmpty()
    assert rows_of(spark, lakehouse, SILVER_SECTIONS, kept) > 0
    # the index no longer has it, in any version on disk
    assert indexed_docs(index_root) == {kept}
    assert all(gone not in set(pd.read_parquet(p)["doc_id"]) for p in index_root.glob("*/v*/chunks.parquet"))
    # the landing file is gone, so the next ingest does not bring the document back
    assert report.files == [str(landing / "outline.pdf")] and not (landing / "outline.pdf").exists()
    ingest_bronze(spark, lakehouse, str(landing), Settings().bronze)
    assert spark.table(lakehouse.table(BRONZE_DOCUMENTS.name)).filter(F.col("doc_id") == gone).isEmpty()
    # time travel cannot bring the rows back: the older versions' files were vacuumed, also in the
    # parse scratch table, whose version 1 held the parsed text before the run emptied it
    for spec, version in ((SILVER_SECTIONS, sections_before), (SILVER_PARSE_STAGING, 1)):
        with pytest.raises(Exception, match="(?i)not found|no such file"):
            DeltaTable(lakehouse.location(spec.name), version=version).to_pandas()

    with pytest.raises(NoSuchDocument, match="no bronze document"):
        forget(spark, lakehouse, Settings(), "outline.pdf", index_root)
