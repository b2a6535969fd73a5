"""Section summaries: strict parsing of model output, and the incremental job against an
OpenAI-compatible endpoint played by a real local HTTP server."""
from __future__ import annotations

import dataclasses
import json

import mlflow
import pyspark.sql.functions as F
import pytest
from deltalake import DeltaTable

from lakerag.ingest.bronze import ingest_bronze
from lakerag.settings import Settings
from lakerag.ingest.silver import run_silver
from lakerag.enrich.summaries import MalformedOutput, parse_metadata, run_params, run_summaries
from lakerag.tracking import log_task_run
from lakerag.lakehouse.tables import SILVER_CHUNKS, SILVER_SECTION_SUMMARIES, SILVER_SECTIONS
from tests.conftest import put
from tests.scripted_http import ScriptedServer, served_settings

GOOD = {"summary": "The section explains how outlines are written with hyperref.", "title": "Outlines",
        "keywords": ["outline", "hyperref"], "questions": ["How do I add bookmarks to a PDF?"]}


def test_parses_json_inside_a_code_fence():
    metadata = parse_metadata("Here it is:\n```json\n" + json.dumps(GOOD) + "\n```")
    assert (metadata.title, metadata.keywords, metadata.questions) == (
        "Outlines", ["outline", "hyperref"], ["How do I add bookmarks to a PDF?"])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I cannot help with that.", "no JSON object"),
        ('{"summary": "x", "title": }', "invalid JSON"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "questions"}), "missing keys ['questions']"),
        (json.dumps(GOOD | {"summary": "Too short."}), '"summary" must be'),
        (json.dumps(GOOD | {"questions": ["Not a question."]}), 'must end with "?"'),
        (json.dumps(GOOD | {"keywords": "outline, hyperref"}), '"keywords" must be a list'),
        (json.dumps(GOOD | {"keywords": ["ok", ""]}), "non-empty strings"),
    ],
)
def test_malformed_output_is_rejected_with_the_reason(text, reason):
    with pytest.raises(MalformedOutput, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_metadata(text)


def rows(spark, lakehouse):
    return sorted(spark.table(lakehouse.table(SILVER_SECTION_SUMMARIES.name)).collect(), key=lambda r: r.section_id)


def test_summaries_are_stored_kept_and_recomputed_for_a_new_prompt(spark, lakehouse, landing):
    put(landing, "outline.pdf", "pdflatex-outline.pdf")
    ingest_bronze(spark, lakehouse, str(landing), Settings().bronze)
    run_silver(spark, lakehouse, Settings(), "sail")
    good = json.dumps(GOOD)
    with ScriptedServer([(200, "Sure! Here is a summary of the section."), (200, good), (200, good)]) as server:
        report = run_summaries(spark, lakehouse, served_settings(server))
        # the malformed first answer was sent back with a request to answer with JSON only
        retry = server.requests[1]["body"]["messages"]
        assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]
        assert retry[2]["content"] == "Sure! Here is a summary of the section."
        assert retry[3]["content"].startswith("That was not valid (no JSON object in the output)")
    assert report.written == {"ok": 2} and report.prompt_tokens == 3 * 21 and report.completion_tokens == 3 * 4
    assert report.waiting == 1  # the budget of 2 sections a run leaves the third for the next run
    stored = rows(spark, lakehouse)
    assert [(r.status, r.title, r.model, r.prompt_version) for r in stored] == [
        ("ok", "Outlines", "openai:test-model", "v1")] * 2
    assert sorted(r.prompt_tokens for r in stored) == [21, 42]

    with ScriptedServer([(200, good)]) as server:
        rest = run_summaries(spark, lakehouse, served_settings(server))
    assert (rest.written, rest.waiting, len(rows(spark, lakehouse))) == ({"ok": 1}, 0, 3)

    version = DeltaTable(lakehouse.location(SILVER_SECTION_SUMMARIES.name)).version()
    with ScriptedServer([]) as server:
        again = run_summaries(spark, lakehouse, served_settings(server))
        assert server.requests == [] and not again.changed
    assert DeltaTable(lakehouse.location(SILVER_SECTION_SUMMARIES.name)).version() == version

    with ScriptedServer([(200, good), (200, good)]) as server:
        changed = run_summaries(spark, lakehouse, served_settings(server, prompt_version="v2"))
        assert len(server.requests) == 2
    assert (changed.removed, changed.written, changed.waiting) == (3, {"ok": 2}, 1)
    assert [r.prompt_version for r in rows(spark, lakehouse)] == ["v2", "v2"]


def test_output_still_malformed_after_the_retry_is_a_failed_row(spark, lakehouse, landing):
    put(landing, "outline.pdf", "pdflatex-outline.pdf")
    ingest_bronze(spark, lakehouse, str(landing), Settings().bronze)
    run_silver(spark, lakehouse, Settings(), "sail")
    bad = json.dumps(GOOD | {"questions": []})
    with ScriptedServer([(200, bad), (200, bad), (500, None)]) as server:
        report = run_summaries(spark, lakehouse, served_settings(server))
    assert report.written == {"failed": 2}
    errors = sorted(r.error for r in rows(spark, lakehouse))
    assert errors[0].startswith("backend: HTTPError: HTTP Error 500")
    assert errors[1] == 'malformed output: "questions" must be a list of 1 to 5 strings'
    assert all(r.summary is None and r.status == "failed" for r in rows(spark, lakehouse))


@pytest.mark.slow
def test_local_model_summarises_real_sections_once(spark, lakehouse, landing):
    # The default packaged Qwen2.5-Coder-0.5B on llama.cpp, the JSON schema enforced by grammar.
    put(landing, "outline.pdf", "pdflatex-outline.pdf")  # two sections of 1,258 characters qualify
    ingest_bronze(spark, lakehouse, str(landing), Settings().bronze)
    run_silver(spark, lakehouse, Settings(), "sail")
    settings = dataclasses.replace(Settings(), summaries=dataclasses.replace(Settings().summaries, min_chars=1258))
    report = run_summaries(spark, lakehouse, settings)
    stored = rows(spark, lakehouse)
    assert sum(report.written.values()) == len(stored) == 2
    assert {r.model for r in stored} == {"llamacpp:qwen2.5-coder-0.5b-instruct"}
    # structured output: no malformed JSON, every summary valid
    assert all(r.status == "ok" for r in stored), [r.error for r in stored]
    assert all(r.summary and r.keywords and all(q.endswith("?") for q in r.questions) for r in stored)
    version = DeltaTable(lakehouse.location(SILVER_SECTION_SUMMARIES.name)).version()
    assert not run_summaries(spark, lakehouse, settings).changed
    assert DeltaTable(lakehouse.location(SILVER_SECTION_SUMMARIES.name)).version() == version


def test_a_long_section_is_summarised_from_its_chunks(spark, lakehouse, landing, mlflow_store):
    put(landing, "outline.pdf", "pdflatex-outline.pdf")
    ingest_bronze(spark, lakehouse, str(landing), Settings().bronze)
    run_silver(spark, lakehouse, Settings(), "sail")
    # the job takes the longest first, ties by section id
    longest = spark.table(lakehouse.table(SILVER_SECTIONS.name)).orderBy(F.length("text").desc(), "section_id").first()
    paragraphs = [c.text for c in spark.table(lakehouse.table(SILVER_CHUNKS.name))
                  .filter((F.col("section_id") == longest.section_id) & (F.col("strategy") == "paragraph"))
                  .orderBy("chunk_index").collect()]
    assert len(paragraphs) >= 2
    chunk_summaries = [(200, f"Part {i} explains bookmarks.") for i in range(len(paragraphs))]
    with ScriptedServer(chunk_summaries + [(200, json.dumps(GOOD))]) as server:
        report = run_summaries(spark, lakehouse, served_settings(server, max_sections=1, max_input_chars=500))
    assert report.written == {"ok": 1}
    # one call per paragraph chunk, in order, each quoting its chunk; then the metadata call
    # gets the joined chunk summaries instead of the cut-off section text
    asked = [r["body"]["messages"] for r in server.requests]
    assert [m[-1]["content"].split('"""')[1].strip() for m in asked[:-1]] == paragraphs
    assert all(r["body"]["max_tokens"] == 80 for r in server.requests[:-1])
    assert asked[-1][-1]["content"].split('"""')[1].strip() == "\n".join(
        f"- Part {i} explains bookmarks." for i in range(len(paragraphs)))
    stored = rows(spark, lakehouse)
    calls = len(paragraphs) + 1
    assert [(r.section_id, r.prompt_tokens, r.completion_tokens) for r in stored] == [
        (longest.section_id, 21 * calls, 4 * calls)]

    # the run's cost goes to MLflow
    settings = served_settings(server, max_sections=1, max_input_chars=500)
    run = mlflow.get_run(log_task_run("summarize-sections", run_params(settings), report.metrics()))
    assert run.data.params["model"] == "openai:test-model"
    assert run.data.metrics == {"sections_ok": 1, "sections_failed": 0, "sections_removed": 0,
                                "sections_waiting": 2, "prompt_tokens": 21 * calls, "completion_tokens": 4 * calls}


def test_questions_only_output_is_parsed_without_the_other_fields():
    metadata = parse_metadata(json.dumps({"questions": ["How do I add bookmarks to a PDF?"]}), ("questions",))
    assert (metadata.summary, metadata.title, metadata.keywords, metadata.questions) == (
        None, None, None, ["How do I add bookmarks to a PDF?"])
    with pytest.raises(MalformedOutput, match=r"missing keys \['questions'\]"):
        parse_metadata(json.dumps({"summary": GOOD["summary"]}), ("questions",))
