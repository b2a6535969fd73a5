"""Evaluation: question generation, metrics, the cached judge, intervals and the promotion gate."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from lakerag.ingest.bronze import ingest_bronze
from lakerag.chain.rag import RagChain
from lakerag.evaluation.jobs import TAG_FINGERPRINT, TAG_SET, TAG_VERSION, load_questions, log_summary, promote
from lakerag.evaluation.question_sets import parse_pairs, run_generation, split_of, support
from lakerag.evaluation.metrics import (
    Judge,
    MetricSummary,
    citation_accuracy,
    context_precision,
    evaluate_chain,
    gate,
    judged_scores,
    summarise,
    summarise_table,
)
from lakerag.chain.llm import make_llm
from lakerag.retrieval.retriever import Retriever
from lakerag.settings import ChainSettings, EvaluationSettings, Settings
from lakerag.ingest.silver import run_silver
from lakerag.enrich.summaries import MalformedOutput
from lakerag.lakehouse.tables import EVAL_QUESTIONS, SILVER_SECTIONS
from tests.conftest import put
from tests.scripted_http import ScriptedServer, served_settings

STYLES = ("factual", "paraphrased", "multi-sentence")


def test_pairs_are_parsed_and_malformed_output_refused():
    pairs = parse_pairs('Sure:\n[{"style": "factual", "question": "What is dpkg used for?", '
                        '"answer": "It installs Debian packages."}]', STYLES)
    assert pairs == [{"style": "factual", "question": "What is dpkg used for?", "answer": "It installs Debian packages."}]
    for text, reason in [("no list", "no JSON list"), ('[{"question": "Why?"}]', "string"),
                         ('[{"question": "What is it", "answer": "Something long."}]', "end with"), ("[]", "empty")]:
        with pytest.raises(MalformedOutput, match=reason):
            parse_pairs(text, STYLES)


def test_support_and_split():
    assert support("dpkg installs packages", "The dpkg program installs Debian packages.") == 1.0
    assert support("bananas grow on trees", "The dpkg program installs Debian packages.") == 0.0
    assert split_of("00000000ffff", 0.5) == "test" and split_of("ffffffff0000", 0.5) == "train"


def test_context_precision_and_citation_accuracy():
    assert context_precision(["a", "b", "c"], "a") == 1.0
    assert context_precision(["x", "a"], "a") == 0.5
    assert context_precision(["x", "y"], "a") == 0.0
    source = {"doc_id": "d", "page_start": 3, "page_end": 4}
    cites = [{"doc_id": "d", "page_start": 4, "page_end": 5}, {"doc_id": "e", "page_start": 3, "page_end": 3}]
    assert citation_accuracy(cites, source) == 0.5 and math.isnan(citation_accuracy([], source))


def test_judged_scores_follow_the_formulas():
    judgment = {"answer_claims": [{"in_contexts": True, "in_reference": True}, {"in_contexts": False, "in_reference": False}],
                "reference_statements": [{"in_contexts": True, "in_answer": True}, {"in_contexts": True, "in_answer": False},
                                         {"in_contexts": False, "in_answer": False}, {"in_contexts": True, "in_answer": False}],
                "answer_questions": ["q1", "q2"]}
    scores = judged_scores(judgment, "q", lambda question, others: 0.8)
    # faithfulness 1/2; context recall 3/4; correctness F1 of precision 1/2 and recall 1/4 = 1/3
    assert scores == pytest.approx({"faithfulness": 0.5, "context_recall": 0.75, "answer_correctness": 1 / 3,
                                    "answer_relevance": 0.8})
    assert all(math.isnan(v) for v in judged_scores(None, "q", lambda q, o: 1.0).values())


def test_a_failed_judgment_is_counted_not_averaged():
    values = pd.Series([1.0, 0.0, float("nan"), 1.0])
    summary = summarise(values, 200, 0.95, 0)
    assert summary.mean == pytest.approx(2 / 3) and summary.scored == 3 and summary.nan_rate == 0.25
    assert 0.0 <= summary.ci_low <= summary.mean <= summary.ci_high <= 1.0
    nothing = summarise(pd.Series([float("nan")] * 2), 200, 0.95, 0)
    assert math.isnan(nothing.mean) and nothing.nan_rate == 1.0


GOOD_JUDGMENT = json.dumps({"answer_claims": [{"claim": "c", "in_contexts": True, "in_reference": True}],
                            "reference_statements": [{"statement": "s", "in_contexts": True, "in_answer": True}],
                            "answer_questions": ["What is dpkg?"]})


def test_judge_calls_are_cached_and_failures_recorded():
    config = EvaluationSettings()
    with ScriptedServer([(200, GOOD_JUDGMENT), (200, "I think it is fine.")]) as server:
        llm = make_llm(served_settings(server).llm)
        judge = Judge(llm, "openai:test-model", config, cache={})
        first = judge.judge("What is dpkg?", ["ctx"], "ref", "answer")
        again = judge.judge("What is dpkg?", ["ctx"], "ref", "answer")  # same prompt: no second call
        failed = judge.judge("Another?", ["ctx"], "ref", "answer")
        assert len(server.requests) == 2 and judge.calls == 2
    assert first == again and first["answer_questions"] == ["What is dpkg?"] and failed is None
    statuses = sorted(v["status"] for v in judge.new.values())
    assert statuses == ["failed", "ok"]
    # a backend failure is NaN for this run but not stored: the next run asks again
    with ScriptedServer([(500, None)]) as server:
        flaky = Judge(make_llm(served_settings(server).llm), "openai:test-model", config, cache={})
        assert flaky.judge("Third?", ["ctx"], "ref", "answer") is None
        assert flaky.transient_failures == 1 and flaky.new == {}
    # a later run with the stored judgments asks nothing
    with ScriptedServer([]) as server:
        later = Judge(make_llm(served_settings(server).llm), "openai:test-model", config, cache=dict(judge.new))
        assert later.judge("What is dpkg?", ["ctx"], "ref", "answer") == first
        assert later.judge("Another?", ["ctx"], "ref", "answer") is None and server.requests == []


def test_gate_refuses_worse_beyond_intervals_and_accepts_equal():
    good = {"recall@k": MetricSummary(0.8, 0.7, 0.9, 20, 0.0)}
    same = {"recall@k": MetricSummary(0.78, 0.68, 0.88, 20, 0.0)}
    bad = {"recall@k": MetricSummary(0.1, 0.0, 0.2, 20, 0.0)}
    assert gate(good, same, ("recall@k",))[0]
    passed, table = gate(good, bad, ("recall@k",))
    assert not passed and table.loc[0, "verdict"] == "worse beyond the intervals"
    with pytest.raises(ValueError, match="unknown"):
        gate(good, same, ("recal@k",))


def test_generation_keeps_supported_pairs_rejects_the_rest_retires_and_erases_with_the_source(spark, lakehouse, landing):
    put(landing, "outline.pdf", "pdflatex-outline.pdf")
    ingest_bronze(spark, lakehouse, str(landing), Settings().bronze)
    run_silver(spark, lakehouse, Settings(), "sail")
    # the seeded order (sha256 of seed + section id) decides which section a budget of one takes
    sections = spark.table(lakehouse.table(SILVER_SECTIONS.name)).collect()
    section = min(sections, key=lambda r: hashlib.sha256(f"0{r.section_id}".encode()).hexdigest())
    words = " ".join(section.text.split()[:12])
    pairs = json.dumps([
        {"style": "factual", "question": "What does this section of the outline say?", "answer": words},
        {"style": "paraphrased", "question": "What does this section of the outline say?", "answer": words},
        {"style": "multi-sentence", "question": "Which zebra won the lighthouse race?",
         "answer": "The striped zebra won the lighthouse race easily."},
    ])
    with ScriptedServer([(200, pairs)]) as server:
        settings = served_settings(server)
        settings = dataclasses.replace(settings, evaluation=dataclasses.replace(
            settings.evaluation, max_sections=1, min_chars=0, seed_examples=()))
        report = run_generation(spark, lakehouse, settings)
        sent = server.requests[0]["body"]["messages"][1]["content"]
    assert report.statuses == {"active": 1, "rejected": 2} and report.prompt_tokens == 21
    rows = {r.style: r for r in spark.table(lakehouse.table(EVAL_QUESTIONS.name)).collect()}
    assert rows["factual"].status == "active" and rows["factual"].split in ("train", "test")
    assert rows["paraphrased"].reason.startswith("duplicate (similarity 1.00")
    assert rows["multi-sentence"].reason.startswith("unsupported (support 0.")
    assert {r.section_id for r in rows.values()} == {section.section_id} and section.text[:200] in sent

    with ScriptedServer([]) as server:  # no new qualifying section: nothing is asked
        settings_again = dataclasses.replace(settings, llm=served_settings(server).llm,
                                             evaluation=dataclasses.replace(settings.evaluation, max_sections=0,
                                                                            min_chars=10**6))
        assert run_generation(spark, lakehouse, settings_again).statuses == {} and server.requests == []

    put(landing, "outline.pdf", "pdflatex-4-pages.pdf")  # a new version: its old sections leave silver
    ingest_bronze(spark, lakehouse, str(landing), Settings().bronze)
    run_silver(spark, lakehouse, Settings(), "sail")
    with ScriptedServer([]) as server:
        settings_again = dataclasses.replace(settings_again, llm=served_settings(server).llm)
        assert run_generation(spark, lakehouse, settings_again).retired == 3
    assert {r.status for r in spark.table(lakehouse.table(EVAL_QUESTIONS.name)).collect()} == {"retired"}

    (landing / "outline.pdf").unlink()  # the file itself is deleted: its pairs quote it, so they go
    ingest_bronze(spark, lakehouse, str(landing), Settings().bronze)
    run_silver(spark, lakehouse, Settings(), "sail")
    with ScriptedServer([]) as server:
        settings_again = dataclasses.replace(settings_again, llm=served_settings(server).llm)
        assert run_generation(spark, lakehouse, settings_again).erased == 3
    assert spark.table(lakehouse.table(EVAL_QUESTIONS.name)).isEmpty()


@pytest.mark.slow
def test_gate_refuses_a_chain_with_k_0_and_accepts_an_equal_one(spark, corpus_index):
    lakehouse, report, _ = corpus_index
    questions = load_questions(spark, lakehouse, "debian-faq", limit=20)
    config = dataclasses.replace(EvaluationSettings(), bootstrap_resamples=500)

    def summary_for(k: int, server: ScriptedServer) -> dict[str, MetricSummary]:
        settings = dataclasses.replace(served_settings(server),
                                       chain=dataclasses.replace(ChainSettings(), k=k, rerank=False))
        chain = RagChain(Retriever.from_settings(report.folder, settings), make_llm(settings.llm), settings.chain)
        table = evaluate_chain(lambda rows: [chain.answer(r["messages"]) for r in rows], questions, None,
                               lambda q, o: 0.0, config)
        return summarise_table(table, config)

    with ScriptedServer([(200, "See [1].")] * 60) as server:
        champion, equal, degraded = summary_for(4, server), summary_for(4, server), summary_for(0, server)
    assert champion["recall@k"].mean > 0.5 and degraded["recall@k"].mean == 0.0
    assert math.isnan(champion["faithfulness"].mean) and champion["faithfulness"].nan_rate == 1.0
    metrics = config.gate_metrics
    assert gate(champion, equal, metrics)[0]
    passed, table = gate(champion, degraded, metrics)
    assert not passed and set(table["verdict"]) == {"worse beyond the intervals"}


class _Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return ["x"]


def _evaluation_run(version: str, recall: float, fingerprint: str = "f") -> None:
    with mlflow.start_run():
        mlflow.set_tags({TAG_VERSION: version, TAG_SET: "generated", TAG_FINGERPRINT: fingerprint})
        log_summary({"recall@k": MetricSummary(recall, recall - 0.1, recall + 0.1, 10, 0.0)})


def test_promote_moves_the_alias_only_when_the_gate_passes(mlflow_store, capsys):
    experiment = mlflow.get_experiment_by_name("lakerag-test").experiment_id
    client = MlflowClient()
    assert promote("chain", experiment, "generated", ("recall@k",)) == (
        False, "chain has no @challenger: run `lakerag register-chain` first")
    for _ in range(3):
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="m", python_model=_Constant())
        mlflow.register_model(info.model_uri, "chain")
    client.set_registered_model_alias("chain", "challenger", "1")
    assert promote("chain", experiment, "generated", ("recall@k",))[0] is False  # not evaluated yet
    _evaluation_run("1", 0.8)
    assert promote("chain", experiment, "generated", ("recall@k",))[0]  # first champion
    client.set_registered_model_alias("chain", "challenger", "2")
    _evaluation_run("2", 0.2)
    passed, why = promote("chain", experiment, "generated", ("recall@k",))
    assert not passed and "worse beyond the intervals" in why
    assert str(client.get_model_version_by_alias("chain", "champion").version) == "1"
    client.set_registered_model_alias("chain", "challenger", "3")
    _evaluation_run("3", 0.75)
    assert promote("chain", experiment, "generated", ("recall@k",))[0]
    assert str(client.get_model_version_by_alias("chain", "champion").version) == "3"


def test_evaluation_asks_as_a_reader_of_every_group_a_document_carries(spark, lakehouse):
    from datetime import datetime, timezone

    from lakerag.access.identity import Identity
    from lakerag.evaluation.jobs import evaluator
    from lakerag.lakehouse.tables import SILVER_DOCUMENTS

    now = datetime.now(timezone.utc)
    rows = [(doc, "v", f"/l/{doc}.pdf", f"{doc}.pdf", doc, "en", 1, 1, 0, [], now, groups)
            for doc, groups in (("pay", ["hr"]), ("law", ["hr", "legal"]), ("faq", ["users"]))]
    spark.createDataFrame(rows, SILVER_DOCUMENTS.schema).write.insertInto(lakehouse.table(SILVER_DOCUMENTS.name))
    assert evaluator(spark, lakehouse) == Identity("lakerag-evaluation", ("hr", "legal", "users"))
