"""The chat page's API on a real server and real Delta tables: documents for the filters, cited
PDFs from bronze, feedback rows (delta-rs appends the engine then reads), and thumbs-down
feedback turned into candidate eval questions. (The page itself: tests/test_serving.py.)"""
from __future__ import annotations

import json

import pyspark.sql.functions as F
import pytest

from lakerag.bronze import ingest_bronze
from lakerag.chain import BadRequest
from lakerag.chat import Feedback, LakeFiles
from lakerag.evalset import candidates_from_feedback
from lakerag.loadtest import serve_in_background
from lakerag.server import create_app
from lakerag.settings import ChainSettings, Settings
from lakerag.silver import run_silver
from lakerag.tables import EVAL_QUESTIONS, SERVING_FEEDBACK, SILVER_SECTIONS
from tests.conftest import corpus_pdf, http_call, put

GOOD = {"question": "What is an outline?", "answer": "Bookmarks [1].", "retrieved_ids": [], "verdict": "down",
        "comment": " too vague "}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "must be a JSON object"),
        (GOOD | {"verdict": "meh"}, '"verdict" must be "up" or "down"'),
        (GOOD | {"question": ""}, '"question" must be a non-empty string'),
        (GOOD | {"answer": "x" * 101}, "at most 100 characters"),
        (GOOD | {"retrieved_ids": "s1"}, '"retrieved_ids" must be a list'),
        (GOOD | {"comment": 5}, '"comment" must be a string'),
    ],
)
def test_bad_feedback_is_refused_with_the_reason(payload, message):
    with pytest.raises(BadRequest, match=message.replace("(", r"\(")):
        Feedback.parse(payload, max_chars=100)


def request(url: str, body: dict | None = None) -> tuple[int, bytes]:
    status, _, raw = http_call(url, json.dumps(body).encode() if body is not None else None, timeout=30)
    return status, raw


def test_documents_pdfs_and_feedback_through_the_api_then_candidates(spark, lakehouse, landing):
    put(landing, "outline.pdf", "pdflatex-outline.pdf")
    ingest_bronze(spark, lakehouse, str(landing), Settings().bronze)
    run_silver(spark, lakehouse, Settings(), "sail")
    sections = spark.table(lakehouse.table(SILVER_SECTIONS.name)).orderBy("ordinal").collect()
    app = create_app(None, ChainSettings(), "models:/lakerag_chain@champion", "3", LakeFiles(lakehouse))
    with serve_in_background(app) as base:
        status, body = request(base + "/api/documents")
        [document] = json.loads(body)
        assert status == 200 and document["file_name"] == "outline.pdf"
        assert document["sections"] == list(dict.fromkeys(s.heading_path[0] for s in sections if s.level == 1))
        status, pdf = request(f"{base}/documents/{document['doc_id']}.pdf")
        assert status == 200 and pdf == corpus_pdf("pdflatex-outline.pdf").read_bytes()
        assert request(f"{base}/documents/nope.pdf")[0] == 404
        assert request(base + "/api/feedback", GOOD | {"verdict": "sideways"})[0] == 400
        status, body = request(base + "/api/feedback", GOOD | {"retrieved_ids": [sections[1].section_id]})
        assert status == 201 and json.loads(body)["feedback_id"]
        status, page = request(base + "/")
        assert status == 200 and b"Your question" in page
    [row] = spark.table(lakehouse.table(SERVING_FEEDBACK.name)).collect()
    assert (row.verdict, row.comment, row.model_version, row.model_uri, row.user) == (
        "down", "too vague", "3", "models:/lakerag_chain@champion", None)

    assert candidates_from_feedback(spark, lakehouse) == 1
    assert candidates_from_feedback(spark, lakehouse) == 0  # once per feedback row
    [candidate] = spark.table(lakehouse.table(EVAL_QUESTIONS.name)).filter(F.col("status") == "candidate").collect()
    assert (candidate.question, candidate.section_id, candidate.doc_id, candidate.split) == (
        GOOD["question"], sections[1].section_id, document["doc_id"], "test")
    assert candidate.reason.endswith("| comment: too vague")


def test_feedback_without_a_lakehouse_says_how_to_enable_it():
    with serve_in_background(create_app(None, ChainSettings(), "runs:/x/model")) as base:
        status, body = request(base + "/api/feedback", GOOD)
        assert request(base + "/api/documents") == (200, b"[]")
    assert status == 503 and "--lake-root" in json.loads(body)["message"]
