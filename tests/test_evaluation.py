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
from mlflow.exceptions import MlflowException

from lakerag.ingest.bronze import ingest_bronze
from lakerag.chain.rag import RagChain
from lakerag.evaluation.jobs import (
    PER_QUESTION,
    TAG_FINGERPRINT,
    TAG_JUDGE_CHECK,
    TAG_SET,
    TAG_VERSION,
    evaluation_key,
    judge_trusted,
    load_questions,
    promote,
)
from lakerag.evaluation.question_sets import parse_pair, passages, run_generation, split_of, support
from lakerag.evaluation.metrics import (
    Judge,
    citation_accuracy,
    context_precision,
    gate,
    judged_scores,
    summarise,
)
from lakerag.chain.llm import make_llm
from lakerag.chain.registry import resolve_model
from lakerag.evaluation.judge_check import check_judge, judge_cases
from lakerag.evaluation.scorers import evaluate_chain
from lakerag.retrieval.retriever import Retriever
from lakerag.settings import ChainSettings, EvaluationSettings, Settings
from lakerag.ingest.silver import run_silver
from lakerag.enrich.summaries import MalformedOutput
from lakerag.lakehouse.tables import EVAL_QUESTIONS, SILVER_DOCUMENTS, SILVER_SECTIONS, merge_into
from tests.conftest import put
from tests.scripted_http import ScriptedServer, served_settings

def test_a_pair_is_parsed_and_malformed_output_refused():
    pair = parse_pair('Sure:\n{"question": "What is dpkg used for?", "answer": "It installs Debian packages."}')
    assert pair == {"question": "What is dpkg used for?", "answer": "It installs Debian packages."}
    for text, reason in [("no object", "no JSON object"), ('{"question": "Why?"}', "string"),
                         ('{"question": "What is it", "answer": "Something long."}', "end with")]:
        with pytest.raises(MalformedOutput, match=reason):
            parse_pair(text)


def test_a_section_is_cut_into_passages_at_sentence_ends():
    config = EvaluationSettings()  # one passage per 300 characters, 3 to 4 of them
    sentence = "The dpkg tool installs one package file. "
    assert [len(p) for p in passages(sentence * 3, config)] == [40, 40, 40]  # short: still 3 passages
    long = passages(sentence * 60, config)  # 2,460 characters: at most 4
    assert len(long) == 4 and all(p.endswith(".") for p in long) and " ".join(long) == (sentence * 60).strip()


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


def _judgment(faithful: bool, correct: bool, derived: str) -> tuple[int, str]:
    return 200, json.dumps({"answer_claims": [{"claim": "c", "in_contexts": faithful, "in_reference": correct}],
                            "reference_statements": [{"statement": "s", "in_contexts": True, "in_answer": correct}],
                            "answer_questions": [derived]})


def test_the_evaluation_key_covers_questions_mode_version_settings_and_index_version():
    questions = pd.DataFrame({"question_id": ["b", "a"]})
    settings, index = {"chain": {"k": 4}}, {"version": 3, "backend": "faiss"}
    key = evaluation_key(questions, "full+nojudge", "1", settings, index)
    assert key == evaluation_key(questions.iloc[::-1], "full+nojudge", "1", {"chain": {"k": 4}},
                                 {"backend": "faiss", "version": 3})  # order does not matter
    others = {evaluation_key(questions.head(1), "full+nojudge", "1", settings, index),
              evaluation_key(questions, "retrieval-only", "1", settings, index),
              evaluation_key(questions, "full+nojudge", "2", settings, index),  # same settings, another version
              evaluation_key(questions, "full+nojudge", "1", {"chain": {"k": 2}}, index),
              evaluation_key(questions, "full+nojudge", "1", settings, {"version": 4, "backend": "faiss"})}
    assert len(others) == 5 and key not in others


def test_the_judge_check_counts_right_verdicts_per_metric():
    questions = pd.DataFrame({"question_id": ["a", "b"], "question": ["What is dpkg?", "What is apt?"],
                              "reference_answer": ["dpkg installs package files. It is low level.",
                                                   "apt fetches packages. It resolves dependencies."]})
    cases = judge_cases(questions)
    assert list(cases["case"]) == ["own", "own", "other", "other"]
    assert list(cases["answer"]) == ["dpkg installs package files.", "apt fetches packages.",
                                     "apt fetches packages.", "dpkg installs package files."]
    replies = [_judgment(True, True, "What is dpkg?"),    # own answer judged right on every metric
               _judgment(False, False, "Why?"),           # own answer failed: wrong on all but context recall
               _judgment(False, False, "Why?"),           # another's answer failed: right on every metric
               (200, "I cannot judge this.")]             # no judgment: wrong on every metric
    config = dataclasses.replace(EvaluationSettings(), bootstrap_resamples=200)
    with ScriptedServer(replies) as server:
        judge = Judge(make_llm(served_settings(server).llm), "openai:test-model", config, cache={})
        table, accuracy = check_judge(judge, lambda q, derived: 0.9 if derived == [q] else 0.1, questions, config)
        assert len(server.requests) == 4
    assert {m: s.mean for m, s in accuracy.items()} == {
        "faithfulness": 0.5, "answer_relevance": 0.5, "context_recall": 0.75, "answer_correctness": 0.5}
    assert list(table["faithfulness_right"]) == [True, False, True, False]


def test_each_metric_is_an_assessment_on_the_answers_trace(mlflow_store):
    questions = pd.DataFrame({"question_id": ["q1", "q2"], "question": ["What is dpkg?", "What is apt?"],
                              "reference_answer": ["r1", "r2"], "section_id": ["s1", "s2"], "doc_id": ["d", "d"],
                              "page_start": [1, 2], "page_end": [1, 2]})
    answers = {"What is dpkg?": (["s1", "s9"], [{"doc_id": "d", "page_start": 1, "page_end": 1}]),
               "What is apt?": (["s9", "s8"], [])}

    def predict(rows: list[dict]) -> list[dict]:
        retrieved, citations = answers[rows[0]["messages"][-1]["content"]]
        return [{"answer": "a", "retrieved": retrieved, "citations": citations,
                 "contexts": [{"text": f"text of {s}"} for s in retrieved]}]

    config = EvaluationSettings()
    with mlflow.start_run() as run:
        table = evaluate_chain(predict, questions, None, lambda q, o: 0.0, config)
    assert list(table["recall@k"]) == [1.0, 0.0] and list(table["mrr"]) == [1.0, 0.0]
    assert table["citation_accuracy"].iloc[0] == 1.0 and math.isnan(table["citation_accuracy"].iloc[1])
    assert table["faithfulness"].isna().all()  # no judge
    traces = {t.info.trace_id: t for t in mlflow.search_traces(run_id=run.info.run_id, return_type="list")}
    first = {a.name: a for a in traces[table["trace_id"].iloc[0]].info.assessments}
    assert first["recall_at_k"].value == 1.0 and first["citation_accuracy"].value == 1.0
    second = {a.name: a for a in traces[table["trace_id"].iloc[1]].info.assessments}
    assert second["citation_accuracy"].error.error_message == "the answer cites nothing"


def _per_question(**metrics: list[float]) -> pd.DataFrame:
    count = len(next(iter(metrics.values())))
    return pd.DataFrame({"question_id": [f"q{i:02}" for i in range(count)], **metrics})


def test_the_paired_gate_compares_question_by_question():
    config = dataclasses.replace(EvaluationSettings(), bootstrap_resamples=1000, max_drop=0.05)
    hits = [1.0] * 30 + [0.0] * 10
    champion = _per_question(**{"recall@k": hits})
    # 4 of 30 hits lost and nothing gained: both means' intervals overlap (0.75 vs 0.65 on 40
    # questions), but every paired difference is <= 0, so the interval of the mean lies below zero
    lost = _per_question(**{"recall@k": [0.0] * 4 + hits[4:]})
    passed, table = gate(champion, lost, ("recall@k",), config)
    assert not passed and table.loc[0, "verdict"] == "refused: worse, interval below zero"
    assert table.loc[0, "difference"] == -0.1 and table.loc[0, "questions"] == 40
    # different questions right, the same quality: 3 lost, 3 gained -> accepted
    swapped = _per_question(**{"recall@k": [0.0] * 3 + hits[3:30] + [1.0] * 3 + [0.0] * 7})
    passed, table = gate(champion, swapped, ("recall@k",), config)
    assert passed and table.loc[0, "verdict"] == "not worse" and table.loc[0, "difference"] == 0.0
    # 5 lost, 2 gained: the interval reaches zero, the mean drop 0.075 exceeds max_drop 0.05
    worse = _per_question(**{"recall@k": [0.0] * 5 + hits[5:30] + [1.0] * 2 + [0.0] * 8})
    passed, table = gate(champion, worse, ("recall@k",), config)
    assert not passed and table.loc[0, "verdict"] == "refused: mean drop 0.075 > max_drop 0.05"
    assert float(table.loc[0, "interval"].strip("[]").split(", ")[1]) >= 0.0
    assert gate(champion, worse, ("recall@k",), dataclasses.replace(config, max_drop=0.1))[0]


def test_the_paired_gate_skips_unscored_pairs_and_refuses_what_it_cannot_compare():
    config = dataclasses.replace(EvaluationSettings(), bootstrap_resamples=200)
    nan = float("nan")
    champion = _per_question(**{"recall@k": [1.0, 1.0, 0.0, 1.0], "faithfulness": [1.0, 0.5, nan, 1.0]})
    # a judge failure on either side is no difference: only the 2 questions both scored count
    challenger = _per_question(**{"recall@k": [1.0, 1.0, 0.0, 1.0], "faithfulness": [1.0, nan, 0.0, 1.0]})
    passed, table = gate(champion, challenger, ("recall@k", "faithfulness"), config)
    assert passed and table.set_index("metric").loc["faithfulness", "questions"] == 2
    unjudged = _per_question(**{"recall@k": [1.0, 1.0, 0.0, 1.0], "faithfulness": [nan] * 4})
    passed, table = gate(champion, unjudged, ("faithfulness",), config)
    assert not passed and table.loc[0, "verdict"] == "refused: the challenger has no scores"
    with pytest.raises(ValueError, match="different questions"):
        gate(champion, champion.head(3), ("recall@k",), config)
    with pytest.raises(ValueError, match="unknown"):
        gate(champion, challenger, ("recal@k",), config)


def test_generation_keeps_supported_pairs_rejects_the_rest_retires_and_erases_with_the_source(spark, lakehouse, landing):
    put(landing, "outline.pdf", "pdflatex-outline.pdf")
    ingest_bronze(spark, lakehouse, str(landing), Settings().bronze)
    run_silver(spark, lakehouse, Settings(), "sail")
    # the seeded order (sha256 of seed + section id) decides which section a budget of one takes
    sections = spark.table(lakehouse.table(SILVER_SECTIONS.name)).collect()
    section = min(sections, key=lambda r: hashlib.sha256(f"0{r.section_id}".encode()).hexdigest())
    words = " ".join(section.text.split()[:12])
    # one call per passage (3 here), the styles in turn
    pairs = [{"question": "What does this section of the outline say?", "answer": words},
             {"question": "What does this section of the outline say?", "answer": words},
             {"question": "Which zebra won the lighthouse race?", "answer": "The striped zebra won the lighthouse race easily."}]
    with ScriptedServer([(200, json.dumps(pair)) for pair in pairs]) as server:
        settings = served_settings(server)
        settings = dataclasses.replace(settings, evaluation=dataclasses.replace(
            settings.evaluation, max_sections=1, min_chars=0, questions_max=3))
        report = run_generation(spark, lakehouse, settings)
        sent = server.requests[0]["body"]["messages"]
        assert len(server.requests) == 3
    # the human-written example is a finished first exchange, the section the last request
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"].startswith('Passage of "Installing a package file"')
    assert json.loads(sent[2]["content"])["question"] == "Which command installs a .deb file that is already on the disk?"
    assert report.statuses == {"active": 1, "rejected": 2} and report.prompt_tokens == 3 * 21
    assert report.reasons == {"duplicate": 1, "unsupported": 1} and report.sections == 1
    rows = {r.style: r for r in spark.table(lakehouse.table(EVAL_QUESTIONS.name)).collect()}
    # all questions of a section on one side: the section id's hash decides
    assert {r.split for r in rows.values()} == {split_of(section.section_id, 0.5)}
    assert rows["factual"].status == "active"
    assert rows["paraphrased"].reason.startswith("duplicate (similarity 1.00")
    assert rows["multi-sentence"].reason.startswith("unsupported (support 0.")
    assert {r.section_id for r in rows.values()} == {section.section_id} and section.text[:200] in sent[-1]["content"]

    # a question split by the old rule (its own id) moves to its section's side on the next run
    wrong = "train" if rows["factual"].split == "test" else "test"
    merge_into(spark, lakehouse.table(EVAL_QUESTIONS.name),
               spark.createDataFrame([(rows["factual"].question_id, wrong)], "question_id string, split string"),
               EVAL_QUESTIONS.key, matched="UPDATE SET t.split = s.split", insert=False)
    with ScriptedServer([]) as server:  # no new qualifying section: nothing is asked
        settings_again = dataclasses.replace(settings, llm=served_settings(server).llm,
                                             evaluation=dataclasses.replace(settings.evaluation, max_sections=0,
                                                                            min_chars=10**6))
        again = run_generation(spark, lakehouse, settings_again)
        assert again.statuses == {} and server.requests == [] and again.resplit == 1
    assert {r.split for r in spark.table(lakehouse.table(EVAL_QUESTIONS.name)).collect()} == {split_of(section.section_id, 0.5)}
    with ScriptedServer([]) as server:  # the outline is English: a run for German sections asks nothing
        german = dataclasses.replace(settings, llm=served_settings(server).llm, evaluation=dataclasses.replace(
            settings.evaluation, max_sections=0, languages=("de",)))
        left_out = run_generation(spark, lakehouse, german)
        assert server.requests == [] and left_out.sections == 0 and left_out.other_languages == len(sections)

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
def test_the_gate_refuses_a_moderate_regression_and_accepts_another_configuration_of_equal_quality(
        spark, corpus_index, mlflow_store):
    lakehouse, report, _ = corpus_index
    # 20 Debian FAQ questions (their headings: easy) and 20 asked about R-data's sections by heading
    faq = load_questions(spark, lakehouse, "debian-faq", limit=20)
    sections = spark.table(lakehouse.table(SILVER_SECTIONS.name)).filter("level >= 1 and length(text) >= 200")
    r_data = (sections.join(spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).filter("file_name = 'R-data.pdf'")
                            .select("doc_id"),
                            "doc_id").orderBy("section_id").limit(20).toPandas())
    questions = pd.concat([faq, pd.DataFrame({
        "question_id": r_data["section_id"], "question": "What does the documentation say about " + r_data["title"] + "?",
        "reference_answer": r_data["text"].str[:800], "section_id": r_data["section_id"], "doc_id": r_data["doc_id"],
        "page_start": r_data["page_start"], "page_end": r_data["page_end"]})], ignore_index=True)
    config = dataclasses.replace(EvaluationSettings(), bootstrap_resamples=500)

    def evaluated(server: ScriptedServer, k: int, **retrieval) -> pd.DataFrame:
        base = served_settings(server)
        settings = dataclasses.replace(base, chain=dataclasses.replace(ChainSettings(), k=k, rerank=False),
                                       retrieval=dataclasses.replace(base.retrieval, **retrieval))
        chain = RagChain(Retriever.from_settings(report.folder, settings), make_llm(settings.llm), settings.chain)
        with mlflow.start_run():
            return evaluate_chain(lambda rows: [chain.answer(r["messages"]) for r in rows], questions, None,
                                  lambda q, o: 0.0, config)

    with ScriptedServer([(200, "See [1].")] * 120) as server:
        champion = evaluated(server, 4)
        other = evaluated(server, 4, bm25_weight=0.25)  # a slightly different fusion weight
        # k 4 -> 1: sections found at ranks 2-4 leave the context (k 4 -> 2 changes nothing here: no
        # source section of these questions is ranked 3rd or 4th)
        fewer = evaluated(server, 1)
    assert math.isnan(champion["faithfulness"].iloc[0]) and champion["trace_id"].str.startswith("tr-").all()
    metrics = config.gate_metrics
    passed, table = gate(champion, other, metrics, config)
    assert passed, table.to_string()
    assert (champion["retrieved"] != other["retrieved"]).any()  # a different ranking, not the same chain
    passed, table = gate(champion, fewer, metrics, config)
    verdicts = table.set_index("metric")["verdict"]
    assert not passed and verdicts["recall@k"].startswith("refused"), table.to_string()
    assert 0 < champion["recall@k"].mean() - fewer["recall@k"].mean() < 0.2  # moderate: a few questions


class _Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return ["x"]


def _evaluation_run(version: str, recall: list[float], faithfulness: list[float] | None = None) -> None:
    with mlflow.start_run():
        mlflow.set_tags({TAG_VERSION: version, TAG_SET: "generated", TAG_FINGERPRINT: "f"})
        table = _per_question(**{"recall@k": recall, "faithfulness": faithfulness or [float("nan")] * len(recall)})
        mlflow.log_table(table, PER_QUESTION)


def test_promote_moves_the_alias_only_when_the_paired_gate_passes(mlflow_store):
    experiment = mlflow.get_experiment_by_name("lakerag-test").experiment_id
    client = MlflowClient()
    config = dataclasses.replace(EvaluationSettings(), gate_metrics=("recall@k",), bootstrap_resamples=200)
    assert promote("chain", experiment, "generated", config, "judge") == (
        False, "chain has no @challenger: run `lakerag register-chain` first")
    for _ in range(4):
        with mlflow.start_run():
            # requirements given: inferring them runs the model in a subprocess, ~8 s a version
            info = mlflow.pyfunc.log_model(name="m", python_model=_Constant(), pip_requirements=["mlflow"])
        mlflow.register_model(info.model_uri, "chain")
    client.set_registered_model_alias("chain", "challenger", "1")
    assert promote("chain", experiment, "generated", config, "judge")[0] is False  # not evaluated yet
    # `evaluate --version N`: a version resolves to itself, a missing one is an error
    assert resolve_model("models:/chain/2") == ("2", "models:/chain/2")
    with pytest.raises(MlflowException):
        resolve_model("models:/chain/9")
    hits = [1.0] * 8 + [0.0] * 2
    _evaluation_run("1", hits, faithfulness=[1.0] * 10)
    assert promote("chain", experiment, "generated", config, "judge")[0]  # first champion
    client.set_registered_model_alias("chain", "challenger", "2")
    _evaluation_run("2", [0.0] * 3 + hits[3:])
    passed, why = promote("chain", experiment, "generated", config, "judge")
    assert not passed and "refused: worse, interval below zero" in why and "judge judge has no check" in why
    assert str(client.get_model_version_by_alias("chain", "champion").version) == "1"
    # the verdict table is logged with the decision
    logged = mlflow.search_runs([experiment], filter_string="tags.`lakerag.gate` = 'refused'", output_format="list")
    assert len(logged) == 1 and logged[0].data.tags["lakerag.challenger_version"] == "2"
    # judged metrics gate only where the judge's latest check reached judge_min_accuracy (0.85)
    _judge_check("judge", faithfulness=0.7, answer_correctness=0.9)
    assert judge_trusted(experiment, "judge", config)[0] == ("answer_correctness",)
    _judge_check("judge", faithfulness=0.9, answer_correctness=0.6)
    trusted, why = judge_trusted(experiment, "judge", config)
    assert trusted == ("faithfulness",) and "gated judged metrics: faithfulness" in why
    assert judge_trusted(experiment, "another-judge", config)[0] == ()
    # the same retrieval with unfaithful answers: refused on faithfulness
    client.set_registered_model_alias("chain", "challenger", "3")
    _evaluation_run("3", hits, faithfulness=[0.0] * 10)
    passed, why = promote("chain", experiment, "generated", config, "judge")
    assert not passed and "faithfulness" in why.splitlines()[-1] and "refused" in why.splitlines()[-1]
    client.set_registered_model_alias("chain", "challenger", "4")
    _evaluation_run("4", hits, faithfulness=[1.0] * 10)
    assert promote("chain", experiment, "generated", config, "judge")[0]
    assert str(client.get_model_version_by_alias("chain", "champion").version) == "4"


def _judge_check(judge: str, **accuracy: float) -> None:
    with mlflow.start_run():
        mlflow.set_tags({TAG_JUDGE_CHECK: judge})
        mlflow.log_metrics({f"judge_accuracy_{metric}": value for metric, value in accuracy.items()})


def test_evaluation_asks_as_a_reader_of_every_group_a_document_carries(spark, lakehouse):
    from datetime import datetime, timezone

    from lakerag.access.identity import Identity
    from lakerag.evaluation.jobs import evaluator
    from lakerag.lakehouse.tables import SILVER_DOCUMENTS

    now = datetime.now(timezone.utc)
    rows = [(doc, "v", f"/l/{doc}.pdf", f"{doc}.pdf", doc, "en", 1, 1, 0, [], now, groups, None, None)
            for doc, groups in (("pay", ["hr"]), ("law", ["hr", "legal"]), ("faq", ["users"]))]
    spark.createDataFrame(rows, SILVER_DOCUMENTS.schema).write.insertInto(lakehouse.table(SILVER_DOCUMENTS.name))
    assert evaluator(spark, lakehouse) == Identity("lakerag-evaluation", ("hr", "legal", "users"))
