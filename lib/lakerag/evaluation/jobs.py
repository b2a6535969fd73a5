"""The evaluation and promotion jobs: question sets from Delta, the registered model by alias,
results and an HTML report in MLflow, and the gate that moves @champion."""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import re
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyspark.sql.functions as F
from pyspark.sql import SparkSession

from lakerag.access.identity import Identity
from lakerag.ingest.parse_pool import content_id
from lakerag.lakehouse.engine import Lakehouse
from lakerag.evaluation.metrics import (
    Judge,
    MetricSummary,
    answer_relevance_similarity,
    gate,
    summarise_table,
)
from lakerag.evaluation.scorers import assessment_name, evaluate_chain
from lakerag.settings import EvaluationSettings, Settings
from lakerag.chain.llm import model_key
from lakerag.lakehouse.tables import EVAL_JUDGMENTS, EVAL_QUESTIONS, SILVER_DOCUMENTS, SILVER_SECTIONS, merge_into

log = logging.getLogger(__name__)
EVAL_SETS = ("generated", "debian-faq")
EVALUATOR = "lakerag-evaluation"  # the user name evaluation's traces carry
TAG_VERSION, TAG_SET, TAG_FINGERPRINT = "lakerag.model_version", "lakerag.eval_set", "lakerag.eval_fingerprint"
TAG_KEY = "lakerag.eval_key"  # questions + mode + chain settings + index version
TAG_JUDGE_CHECK = "lakerag.judge_check"  # the judge a check run measured
PER_QUESTION = "per_question.json"


class NoQuestions(ValueError):
    """The question set to evaluate on is empty."""


def load_questions(spark: SparkSession, lakehouse: Lakehouse, eval_set: str, limit: int) -> pd.DataFrame:
    """Questions with their source section's document and pages: the test split of the active
    generated pairs, or the Debian FAQ's own questions (section titles ending in "?", whose
    sections are the reference answers)."""
    sections = spark.table(lakehouse.table(SILVER_SECTIONS.name)).select(
        "section_id", "doc_id", "page_start", "page_end", "title", "text")
    if eval_set == "generated":
        questions = (spark.table(lakehouse.table(EVAL_QUESTIONS.name))
                     .filter((F.col("status") == "active") & (F.col("split") == "test"))
                     .select("question_id", "question", "reference_answer", "section_id")
                     .join(sections.select("section_id", "doc_id", "page_start", "page_end"), "section_id"))
    else:
        faq = spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).filter(F.col("file_name") == "debian-faq.pdf")
        questions = (sections.join(faq.select("doc_id"), "doc_id")
                     .filter(F.col("title").endswith("?") & (F.length(F.trim("text")) > 0))
                     .select(F.col("section_id").alias("question_id"), F.col("title").alias("question"),
                             F.substring("text", 1, 800).alias("reference_answer"), "section_id", "doc_id",
                             "page_start", "page_end"))
    frame = questions.orderBy("question_id").toPandas()
    return frame.head(limit) if limit else frame


def fingerprint(questions: pd.DataFrame) -> str:
    """Identity of a question set: the same questions give the same fingerprint."""
    return content_id(*sorted(questions["question_id"]))


def evaluation_key(questions: pd.DataFrame, mode: str, version: str, model_config: dict[str, Any],
                   index: dict[str, Any]) -> str:
    """Identity of what an evaluation measures: the questions, the mode (judge included), the
    model version, its logged settings and the index version it reads; the same key is not
    evaluated twice."""
    return content_id(fingerprint(questions), mode, version, json.dumps(model_config, sort_keys=True, default=str),
                      json.dumps(index, sort_keys=True, default=str))


def _tag_filter(**tags: str) -> str:
    """An MLflow filter string over lakerag tags; values are checked, not quoted blindly."""
    for value in tags.values():
        if not re.fullmatch(r"[\w.:+\-]+", value):
            raise ValueError(f"unexpected characters in tag value {value!r}")
    names = {"version": TAG_VERSION, "eval_set": TAG_SET, "fingerprint": TAG_FINGERPRINT, "key": TAG_KEY,
             "judge": TAG_JUDGE_CHECK}
    return " and ".join(f"tags.`{names[key]}` = '{value}'" for key, value in tags.items())


def evaluated_before(experiment_id: str, key: str) -> bool:
    """Whether an evaluation with this evaluation_key is already logged."""
    import mlflow

    return len(mlflow.search_runs([experiment_id], filter_string=_tag_filter(key=key))) > 0


def report_html(title: str, table: pd.DataFrame, summary: dict[str, MetricSummary], confidence: float) -> str:
    """One self-contained HTML page: metric bars with intervals, score distributions, the worst
    questions with their contexts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def png(figure) -> str:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        plt.close(figure)
        return base64.b64encode(buffer.getvalue()).decode()

    names = list(summary)
    means = [summary[m].mean for m in names]
    errors = [[max(summary[m].mean - summary[m].ci_low, 0) for m in names],
              [max(summary[m].ci_high - summary[m].mean, 0) for m in names]]
    figure, axes = plt.subplots(figsize=(9, 3.5))
    axes.bar(names, [0 if pd.isna(v) else v for v in means], yerr=[[0 if pd.isna(e) else e for e in side]
                                                                   for side in errors], capsize=4)
    axes.set_ylim(0, 1.05)
    axes.set_title(f"mean with {confidence:.0%} bootstrap interval")
    axes.tick_params(axis="x", rotation=30)
    bars = png(figure)
    figure, grid = plt.subplots(2, (len(names) + 1) // 2, figsize=(12, 5))
    for axes, metric in zip(grid.flat, names):
        axes.hist(table[metric].dropna(), bins=10, range=(0, 1))
        axes.set_title(metric, fontsize=9)
    histograms = png(figure)
    rows = "".join(
        f"<tr><td>{m}</td><td>{s.mean:.3f}</td><td>[{s.ci_low:.3f}, {s.ci_high:.3f}]</td><td>{s.scored}</td>"
        f"<td>{s.nan_rate:.0%}</td></tr>" for m, s in summary.items())
    worst = table.sort_values(["recall@k", "faithfulness"], na_position="first").head(5)
    worst_rows = "".join(
        f"<tr><td>{html.escape(r['question'])}</td><td>{html.escape(str(r['answer']))}</td>"
        f"<td>{html.escape(r['reference_answer'][:300])}</td><td>{r['recall@k']:.0f}</td>"
        f"<td>{html.escape(', '.join(r['retrieved']))}</td></tr>" for r in worst.to_dict("records"))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{len(table)} questions</p>"
            f"<table border=1><tr><th>metric</th><th>mean</th><th>interval</th><th>scored</th><th>NaN</th></tr>"
            f"{rows}</table><h2>Metrics</h2><img src='data:image/png;base64,{bars}'>"
            f"<h2>Distributions</h2><img src='data:image/png;base64,{histograms}'>"
            f"<h2>Worst questions</h2><table border=1><tr><th>question</th><th>answer</th><th>reference</th>"
            f"<th>recall@k</th><th>retrieved sections</th></tr>{worst_rows}</table></body></html>")


def evaluator(spark: SparkSession, lakehouse: Lakehouse) -> Identity:
    """Who evaluation asks as: a reader of every group a document carries, so that a question
    written from a restricted section is not scored as a miss (retrieval-only evaluation reads
    the index unrestricted, as the operator)."""
    groups = (spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).select(F.explode("groups").alias("group"))
              .dropDuplicates().collect())
    return Identity.of(EVALUATOR, [row.group for row in groups])


def answers_from(model, identity: Identity | None = None) -> Any:
    """A predict function over rows of {messages, filters} that asks the loaded agent (as `identity`)."""
    from lakerag.chain.responses import agent_request, answer_of

    def predict(rows: list[dict]) -> list[dict]:
        return [answer_of(model.predict(agent_request(row["messages"], row["filters"], identity))) for row in rows]

    return predict


def retrieval_only(model) -> Any:
    """A predict function that runs only the logged chain's retriever (its own settings): no LLM
    calls, so answers, citations and judged metrics are empty / NaN."""
    chain = model.get_raw_model().chain

    def predict(rows: list[dict]) -> list[dict]:
        out = []
        for row in rows:
            hits = chain.retriever.search(row["messages"][-1]["content"], k=chain.settings.k, mode=chain.settings.mode,
                                          rerank=chain.settings.rerank)
            out.append({"answer": "", "citations": [], "retrieved": [h.section_id for h in hits],
                        "contexts": [{"section_id": h.section_id, "text": h.section_text} for h in hits]})
        return out

    return predict


def judge_for(spark: SparkSession, lakehouse: Lakehouse, settings: Settings) -> Judge:
    """The LLM judge of llm.*, with the judgments already stored in eval_judgments as its cache."""
    from lakerag.chain.llm import make_llm

    cache = {r.judgment_id: r.asDict() for r in spark.table(lakehouse.table(EVAL_JUDGMENTS.name)).collect()}
    return Judge(make_llm(settings.llm), model_key(settings), settings.evaluation, cache)


def store_judgments(spark: SparkSession, lakehouse: Lakehouse, judge: Judge) -> None:
    """Keep the judgments made in this run in eval_judgments (asked again never)."""
    if not judge.new:
        return
    now = datetime.now(timezone.utc)
    rows = [{"judgment_id": judgment_id, "judge": judge.name, "created_at": now, **value}
            for judgment_id, value in judge.new.items()]
    merge_into(spark, lakehouse.table(EVAL_JUDGMENTS.name), spark.createDataFrame(rows, EVAL_JUDGMENTS.schema),
               EVAL_JUDGMENTS.key)


def run_judge_check(spark: SparkSession, lakehouse: Lakehouse, settings: Settings,
                    experiment_id: str) -> dict[str, Any]:
    """Check the judge on evaluation.judge_check_questions Debian FAQ questions and log its
    accuracy per metric to MLflow (tag lakerag.judge_check = the judge), where the gate finds it."""
    import mlflow

    from lakerag.evaluation.judge_check import PASS, check_judge

    config = settings.evaluation
    questions = load_questions(spark, lakehouse, "debian-faq", config.judge_check_questions)
    if len(questions) < 2:
        raise NoQuestions("the judge check needs the Debian FAQ in silver (debian-faq.pdf in the landing folder)")
    judge = judge_for(spark, lakehouse, settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"check-judge-{judge.name}") as run:
        table, accuracy = check_judge(judge, answer_relevance_similarity(settings.models.embedding), questions,
                                      config)
        mlflow.set_tags({TAG_JUDGE_CHECK: judge.name})
        mlflow.log_params({"questions": len(questions), "cases": len(table), "judge_calls": judge.calls,
                           "pass_threshold": PASS})
        for metric, s in accuracy.items():
            key = assessment_name(metric)
            mlflow.log_metrics({f"judge_accuracy_{key}": s.mean, f"judge_accuracy_{key}_ci_low": s.ci_low,
                                f"judge_accuracy_{key}_ci_high": s.ci_high})
        mlflow.log_table(table, "judge_cases.json")
    store_judgments(spark, lakehouse, judge)
    return {"run_id": run.info.run_id, "accuracy": accuracy, "table": table, "judge": judge.name}


def run_evaluation(spark: SparkSession, lakehouse: Lakehouse, settings: Settings, model_uri: str, version: str,
                   eval_set: str, experiment_id: str, use_judge: bool,
                   answers: bool = True) -> dict[str, Any] | None:
    """Evaluate one model version on one question set, log it to MLflow; None if this version was
    already evaluated on exactly these questions. answers=False evaluates the retriever only."""
    import mlflow

    from lakerag.chain.registry import load_chain

    config = settings.evaluation
    questions = load_questions(spark, lakehouse, eval_set, config.max_questions)
    if questions.empty:
        raise NoQuestions(f"no questions in the {eval_set!r} set: run `lakerag generate-eval-set` (its test "
                          "split may still be empty)" if eval_set == "generated" else "the Debian FAQ is not in silver")
    print_ = fingerprint(questions)
    # what was measured is part of the identity: a run without the judge does not stand for one with it
    mode = "retrieval-only" if not answers else f"full+judge:{model_key(settings)}" if use_judge else "full+nojudge"
    model = load_chain(model_uri)
    index_version = model.get_raw_model().chain.retriever.version
    key = evaluation_key(questions, mode, version, model.model_config, index_version)
    if evaluated_before(experiment_id, key):
        log.info("version %s already evaluated on these %d %s questions with this index", version, len(questions),
                 eval_set)
        return None
    judge = judge_for(spark, lakehouse, settings) if use_judge and answers else None
    predict = answers_from(model, evaluator(spark, lakehouse)) if answers else retrieval_only(model)
    with mlflow.start_run(run_name=f"evaluate-{eval_set}-v{version}") as run:
        mlflow.set_tags({TAG_VERSION: version, TAG_SET: eval_set, TAG_FINGERPRINT: print_ + mode, TAG_KEY: key,
                         "lakerag.model_uri": model_uri, "lakerag.eval_mode": mode})
        table = evaluate_chain(predict, questions, judge, answer_relevance_similarity(settings.models.embedding),
                               config, answers)
        summary = summarise_table(table, config)
        mlflow.log_params({"questions": len(questions), "k": config.k, "judge": judge.name if judge else "none",
                           "judge_calls": judge.calls if judge else 0, "resamples": config.bootstrap_resamples,
                           "index_version": index_version["version"], "index_backend": index_version["backend"]})
        log_summary(summary)
        mlflow.log_table(table.assign(retrieved=table["retrieved"].map(json.dumps)), PER_QUESTION)
        mlflow.log_text(report_html(f"lakerag evaluation: {eval_set}, model version {version}", table, summary,
                                    config.confidence), "report.html")
    if judge is not None:
        store_judgments(spark, lakehouse, judge)
    return {"run_id": run.info.run_id, "summary": summary, "table": table}


def log_summary(summary: dict[str, MetricSummary]) -> None:
    """Log mean, interval and NaN rate of every metric to the active MLflow run."""
    import mlflow

    for metric, s in summary.items():
        key = assessment_name(metric)
        mlflow.log_metrics({f"{key}_mean": s.mean, f"{key}_ci_low": s.ci_low, f"{key}_ci_high": s.ci_high,
                            f"{key}_nan_rate": s.nan_rate})


def per_question(run) -> pd.DataFrame:
    """The per-question table an evaluation run logged."""
    import mlflow

    return mlflow.load_table(PER_QUESTION, run_ids=[run.info.run_id])


def latest_evaluation(experiment_id: str, version: str, eval_set: str):
    """The newest evaluation run of a model version on a question set, or None."""
    import mlflow

    runs = mlflow.search_runs([experiment_id], filter_string=_tag_filter(version=version, eval_set=eval_set),
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    return runs[0] if runs else None


def judge_trusted(experiment_id: str, judge: str, config: EvaluationSettings) -> tuple[tuple, str]:
    """The judged metrics the gate may use: those the judge's latest check scored with accuracy
    >= evaluation.judge_min_accuracy (none without a check); and a sentence saying why."""
    import mlflow

    runs = mlflow.search_runs([experiment_id], filter_string=_tag_filter(judge=judge),
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    if not runs:
        return (), f"judged metrics not gated: judge {judge} has no check (run `lakerag check-judge`)"
    accuracy = {m: runs[0].data.metrics.get(f"judge_accuracy_{assessment_name(m)}", float("nan"))
                for m in config.judged_gate_metrics}
    trusted = tuple(m for m, value in accuracy.items() if value >= config.judge_min_accuracy)
    shown = ", ".join(f"{m} {v:.2f}" for m, v in accuracy.items())
    return trusted, (f"judge check (run {runs[0].info.run_id}): accuracy {shown}, threshold "
                     f"{config.judge_min_accuracy}; gated judged metrics: {', '.join(trusted) or 'none (advisory)'}")


def promote(name: str, experiment_id: str, eval_set: str, config: EvaluationSettings,
            judge: str) -> tuple[bool, str]:
    """Move @champion to @challenger's version if the paired gate passes on the latest
    evaluations of both on `eval_set`; (promoted, explanation with the verdict table)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        challenger = str(client.get_model_version_by_alias(name, "challenger").version)
    except MlflowException:
        return False, f"{name} has no @challenger: run `lakerag register-chain` first"
    try:
        champion = str(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        champion = None
    new = latest_evaluation(experiment_id, challenger, eval_set)
    if new is None:
        return False, f"challenger version {challenger} has no {eval_set} evaluation: run `lakerag evaluate` first"
    if champion is None or champion == challenger:
        client.set_registered_model_alias(name, "champion", challenger)
        return True, f"no other champion: version {challenger} is now @champion"
    old = latest_evaluation(experiment_id, champion, eval_set)
    if old is None:
        return False, f"champion version {champion} has no {eval_set} evaluation: evaluate it too"
    if old.data.tags.get(TAG_FINGERPRINT) != new.data.tags.get(TAG_FINGERPRINT):
        return False, ("champion and challenger were evaluated on different questions or modes: evaluate both "
                       "again (`lakerag evaluate --version N`)")
    trusted, why = judge_trusted(experiment_id, judge, config)
    passed, table = gate(per_question(old), per_question(new), tuple(config.gate_metrics) + trusted, config)
    with mlflow.start_run(run_name=f"promote-{eval_set}-v{challenger}-over-v{champion}"):
        mlflow.set_tags({"lakerag.gate": "passed" if passed else "refused", "lakerag.challenger_version": challenger,
                         "lakerag.champion_version": champion, TAG_SET: eval_set})
        mlflow.log_table(table, "gate.json")
        mlflow.log_text(why, "judged_metrics.txt")
    if passed:
        client.set_registered_model_alias(name, "champion", challenger)
    verdict = (f"version {challenger} is now @champion (was {champion})" if passed else
               f"refused: version {challenger} is worse than @champion version {champion}")
    return passed, f"{verdict}\n{why}\n{table.to_string(index=False)}"
