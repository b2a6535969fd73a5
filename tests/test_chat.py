"""The chat page's API on a real server, a real index, real Delta tables and a real MLflow store:
documents for the filters (from the served index), cited PDFs from bronze, feedback as an
assessment on the answer's trace, and thumbs-down answers turned into candidate eval questions.
(The page itself: tests/test_serving.py.)"""
from __future__ import annotations

import json

import pyspark.sql.functions as F
import pytest

from lakerag.chain.rag import BadRequest
from lakerag.evaluation.question_sets import candidates_from_feedback, thumbs_down
from lakerag.lakehouse.tables import ACTIVE, BRONZE_DOCUMENTS, EVAL_QUESTIONS
from lakerag.serving.documents import PdfStore
from lakerag.serving.feedback import Feedback
from lakerag.serving.loadtest import LocalChain, serve_in_background
from lakerag.serving.server import create_app
from lakerag.settings import ChainSettings
from tests.conftest import corpus_pdf, http_call
from tests.scripted_http import ScriptedServer
from tests.test_chain import scripted_chain

GOOD = {"trace_id": "tr-1", "verdict": "down", "comment": " too vague "}
OFF_TOPIC = "How long should sourdough bread rise before baking?"  # abstains without an LLM call


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "must be a JSON object"),
        (GOOD | {"verdict": "meh"}, '"verdict" must be "up" or "down"'),
        (GOOD | {"trace_id": ""}, '"trace_id" must be the trace id'),
        (GOOD | {"trace_id": 7}, '"trace_id" must be the trace id'),
        (GOOD | {"comment": 5}, '"comment" must be a string'),
    ],
)
def test_bad_feedback_is_refused_with_the_reason(payload, message):
    with pytest.raises(BadRequest, match=message):
        Feedback.parse(payload)


def test_good_feedback_is_trimmed():
    assert Feedback.parse(GOOD) == Feedback("tr-1", "down", "too vague")


def request(url: str, body: dict | None = None) -> tuple[int, bytes]:
    status, _, raw = http_call(url, json.dumps(body).encode() if body is not None else None, timeout=60)
    return status, raw


@pytest.mark.slow
def test_documents_pdfs_and_feedback_on_the_trace_through_the_api_then_candidates(spark, corpus_index, mlflow_store):
    import mlflow

    lakehouse = corpus_index[0]
    pdfs = PdfStore(lakehouse.location(BRONZE_DOCUMENTS.name), ACTIVE)
    with ScriptedServer([]) as llm:  # any LLM call would fail: none is expected
        chain = scripted_chain(llm, corpus_index[1].folder)
        app = create_app(LocalChain(chain), ChainSettings(), "models:/lakerag_chain@champion", "3", pdfs)
        with serve_in_background(app) as base:
            status, body = request(base + "/api/documents")
            documents = json.loads(body)
            assert status == 200 and [d["file_name"] for d in documents] == ["R-data.pdf", "debian-faq.pdf"]
            debian = documents[1]
            assert debian["sections"][0] == "The Debian GNU/Linux FAQ" and len(debian["sections"]) > 5
            status, pdf = request(f"{base}/documents/{debian['doc_id']}.pdf")
            assert status == 200 and pdf == corpus_pdf("debian-faq.pdf").read_bytes()
            assert request(f"{base}/documents/nope.pdf")[0] == 404

            status, body = request(base + "/invocations", {"input": [{"role": "user", "content": OFF_TOPIC}]})
            response = json.loads(body)
            [message] = response["output"]
            assert status == 200 and message["content"][0]["text"] == ChainSettings().abstain_answer
            trace_id = response["custom_outputs"]["trace_id"]
            mlflow.flush_trace_async_logging()
            assert request(base + "/api/feedback", GOOD | {"verdict": "sideways"})[0] == 400
            assert request(base + "/api/feedback", GOOD | {"trace_id": "tr-unknown"})[0] == 404
            status, body = request(base + "/api/feedback", GOOD | {"trace_id": trace_id})
            assert status == 201 and json.loads(body)["trace_id"] == trace_id
    assert llm.requests == []
    [assessment] = [a for a in mlflow.get_trace(trace_id).info.assessments if a.name == "user_feedback"]
    assert (assessment.value, assessment.rationale, assessment.source.source_type) == (False, "too vague", "HUMAN")

    experiment = mlflow.get_experiment_by_name("lakerag-test").experiment_id
    [down] = thumbs_down([experiment])
    assert (down["trace_id"], down["question"], down["section_id"]) == (
        trace_id, OFF_TOPIC, response["custom_outputs"]["retrieved"][0])
    assert candidates_from_feedback(spark, lakehouse, [down]) == 1
    assert candidates_from_feedback(spark, lakehouse, [down]) == 0  # once per trace
    [candidate] = (spark.table(lakehouse.table(EVAL_QUESTIONS.name))
                   .filter((F.col("status") == "candidate") & (F.col("question") == OFF_TOPIC)).collect())
    assert (candidate.section_id, candidate.split) == (down["section_id"], "test")
    assert candidate.reason.endswith("| comment: too vague")
