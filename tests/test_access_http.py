"""Permission-aware answers over real HTTP, end to end: two PDFs landed in a public and an hr/
folder, bronze -> silver -> gold -> index with access.rules {hr/: [hr]}, the chain behind
`lakerag serve`'s app with a users file; the LLM is a local stand-in for an OpenAI endpoint
(what it is asked is not under test here, what the chain may read is)."""
from __future__ import annotations

import dataclasses
import json
import shutil

import mlflow
import pytest

from lakerag.access.identity import Authenticator, UserDirectory, add_user
from lakerag.chain.llm import make_llm
from lakerag.chain.rag import RagChain
from lakerag.enrich.embeddings import run_gold
from lakerag.enrich.index_build import build_index
from lakerag.ingest.bronze import ingest_bronze
from lakerag.ingest.silver import run_silver
from lakerag.lakehouse.tables import ACTIVE, BRONZE_DOCUMENTS
from lakerag.retrieval.live_index import LiveIndex
from lakerag.serving.documents import PdfStore
from lakerag.serving.loadtest import LocalChain, serve_in_background
from lakerag.serving.server import create_app
from lakerag.settings import AccessSettings, LLMSettings, RetrievalSettings, Settings
from tests.bad_inputs import one_page, stream
from tests.conftest import http_call
from tests.scripted_http import chat_reply
from lakerag.serving.loadtest import LoopbackServer

pytestmark = pytest.mark.slow
SALARY = b"Salary bands for engineers are reviewed every March by the HR committee."
HOURS = b"The office opens at eight in the morning and closes at six in the evening."


def page(title: bytes, *lines: bytes) -> bytes:
    """A one-page PDF: a title line and a paragraph."""
    shown = b" 0 -14 Td ".join(b"(%s) Tj" % line for line in lines)
    return one_page(stream(b"BT /F1 18 Tf 72 720 Td (%s) Tj ET\nBT /F1 11 Tf 72 690 Td %s ET" % (title, shown)))


CHROMIUM = shutil.which("chromium")


def sign_in_on_the_page(base: str, token: str, restricted_doc: str) -> None:
    """In a real browser: the page asks for a token, signs in, lists the documents the user may
    read, and the cookie lets it open a restricted PDF."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(base + "/")
        expect(page.get_by_label("Access token")).to_be_visible()
        expect(page.get_by_label("Your question")).to_be_hidden()
        page.get_by_label("Access token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#model")).to_contain_text("Signed in as alice")
        expect(page.get_by_label("Your question")).to_be_visible()
        expect(page.locator("#document option")).to_have_count(3)  # all documents, handbook, salaries
        assert page.request.get(f"{base}/documents/{restricted_doc}.pdf").status == 200
        browser.close()


def run_pipeline(spark, lakehouse, landing, settings, root):
    """One scheduled run: every layer, then the index."""
    ingest_bronze(spark, lakehouse, str(landing), settings.bronze, access=settings.access)
    silver = run_silver(spark, lakehouse, settings, "sail")
    gold = run_gold(spark, lakehouse, settings)
    return silver, gold, build_index(spark, lakehouse, settings, root)


def test_each_user_gets_only_what_their_groups_may_read(spark, lakehouse, tmp_path, mlflow_store):
    landing = tmp_path / "landing"
    (landing / "hr").mkdir(parents=True)
    (landing / "handbook.pdf").write_bytes(page(b"Office handbook", HOURS, b"Visitors sign in at the front desk."))
    (landing / "hr" / "salaries.pdf").write_bytes(page(b"Salary review", SALARY, b"Raises start on the first of April."))
    users = tmp_path / "secrets" / "users.yml"
    tokens = {"alice": add_user(users, "alice", ["hr"]), "bob": add_user(users, "bob", [])}
    base_settings = Settings()
    settings = dataclasses.replace(
        base_settings, access=AccessSettings(rules={"hr/": ["hr"]}),
        retrieval=dataclasses.replace(RetrievalSettings(), index_refresh_s=0),  # follow every rebuilt index
        llm=LLMSettings(backend="openai", model="test-model", base_url="http://127.0.0.1:9/v1", max_retries=0,
                        api_key_env="NO_KEY_HERE"))  # the stand-in's address comes below
    root = tmp_path / "indexes"
    run_pipeline(spark, lakehouse, landing, settings, root)

    # The stand-in LLM repeats the salary sentence, citing source 1, whatever it is shown.
    with LoopbackServer(lambda path, headers, body: (200, chat_reply(SALARY.decode() + " [1]"), {})) as llm:
        settings = dataclasses.replace(settings, llm=dataclasses.replace(settings.llm, base_url=llm.base_url))
        chain = RagChain(LiveIndex.from_settings(settings, root), make_llm(settings.llm), settings.chain)
        app = create_app(LocalChain(chain), settings.chain, "models:/lakerag_chain@champion", "1",
                         PdfStore(lakehouse.location(BRONZE_DOCUMENTS.name), ACTIVE),
                         Authenticator(UserDirectory.load(users), None))
        with serve_in_background(app) as base:
            def call(path, body=None, user=None, headers=None):
                sent = dict(headers or {})
                if user:
                    sent["Authorization"] = f"Bearer {tokens[user]}"
                status, _, raw = http_call(base + path, None if body is None else json.dumps(body).encode(),
                                           timeout=120, headers=sent)
                return status, json.loads(raw) if raw and raw[:1] in (b"{", b"[") else raw

            def ask(user, question, **custom):
                status, body = call("/invocations", {"input": [{"role": "user", "content": question}],
                                                     "custom_inputs": custom}, user)
                assert status == 200, body
                mlflow.flush_trace_async_logging()
                trace = mlflow.get_trace(body["custom_outputs"]["trace_id"])
                return body["custom_outputs"], trace

            # No token, no data; /health stays open.
            assert call("/health")[0] == 200
            for path in ("/api/config", "/api/documents", "/documents/x.pdf"):
                assert call(path)[0] == 401, path
            assert call("/invocations", {"input": [{"role": "user", "content": "hi"}]})[0] == 401
            assert call("/api/documents", headers={"Authorization": "Bearer not-a-token"})[0] == 401

            documents = {d["file_name"]: d["doc_id"] for d in call("/api/documents", user="alice")[1]}
            assert sorted(documents) == ["handbook.pdf", "salaries.pdf"]
            assert [d["file_name"] for d in call("/api/documents", user="bob")[1]] == ["handbook.pdf"]

            if CHROMIUM:
                sign_in_on_the_page(base, tokens["alice"], documents["salaries.pdf"])

            question = "When are salary bands for engineers reviewed?"
            answer, trace = ask("alice", question)
            assert not answer["abstained"] and {c["file_name"] for c in answer["citations"]} == {"salaries.pdf"}
            assert trace.info.trace_metadata["mlflow.trace.user"] == "alice"
            assert "salaries.pdf" in trace.info.tags["lakerag.files"].split(",")
            assert trace.info.tags["lakerag.groups"] == "hr,users"

            for asked, custom in ((question, {}),
                                  ("What does salaries.pdf say? Quote the HR salary review document.", {}),
                                  # a claimed identity in the body counts for nothing
                                  (question, {"identity": {"user": "alice", "groups": ["hr"]}})):
                answer, trace = ask("bob", asked, **custom)
                assert "salaries.pdf" not in trace.info.tags["lakerag.files"], asked
                assert all(c["file_name"] == "handbook.pdf" for c in answer["contexts"] + answer["citations"]), asked
                assert trace.info.trace_metadata["mlflow.trace.user"] == "bob"

            # PDFs: the reader's groups decide; a cookie from the page's sign-in works like the header.
            salaries = f"/documents/{documents['salaries.pdf']}.pdf"
            assert call(salaries, user="alice")[0] == 200
            assert call(salaries, user="bob")[0] == 403
            status, headers, _ = http_call(base + "/api/session", json.dumps({"token": tokens["alice"]}).encode())
            assert status == 204 and "HttpOnly" in headers["set-cookie"] and "SameSite=strict" in headers["set-cookie"]
            assert call(salaries, headers={"Cookie": headers["set-cookie"].split(";")[0]})[0] == 200
            assert http_call(base + "/api/session", json.dumps({"token": "guess"}).encode())[0] == 401

            # Feedback only on one's own answers.
            alices, _ = ask("alice", question)
            mlflow.flush_trace_async_logging()
            feedback = {"trace_id": alices["trace_id"], "verdict": "up"}
            assert call("/api/feedback", feedback, "bob")[0] == 403
            assert call("/api/feedback", feedback, "alice")[0] == 201

            # The handbook moves into hr/: the next run re-labels it (no parse, no embedding) and
            # bob's answers and document list lose it.
            assert ask("bob", "When does the office open?")[0]["contexts"]
            (landing / "hr" / "handbook.pdf").write_bytes((landing / "handbook.pdf").read_bytes())
            (landing / "handbook.pdf").unlink()
            silver, gold, index = run_pipeline(spark, lakehouse, landing, settings, root)
            assert (silver.parsed, silver.relabelled) == (0, 1)
            assert sum(gold.embedded.values()) == 0 and gold.relabelled > 0 and index.built
            answer, trace = ask("bob", "When does the office open?")
            assert answer["contexts"] == [] and answer["abstained"] and trace.info.tags["lakerag.files"] == ""
            assert call("/api/documents", user="bob")[1] == []
            assert sorted(d["file_name"] for d in call("/api/documents", user="alice")[1]) == [
                "handbook.pdf", "salaries.pdf"]
            assert call(f"/documents/{documents['handbook.pdf']}.pdf", user="bob")[0] == 403

            # A change of rules (hr/ no longer restricted) re-labels the same way.
            unrestricted = dataclasses.replace(settings, access=AccessSettings())
            silver, gold, index = run_pipeline(spark, lakehouse, landing, unrestricted, root)
            assert (silver.parsed, silver.relabelled, sum(gold.embedded.values())) == (0, 2, 0) and index.built
            assert sorted(d["file_name"] for d in call("/api/documents", user="bob")[1]) == [
                "handbook.pdf", "salaries.pdf"]
    shutil.rmtree(root)
