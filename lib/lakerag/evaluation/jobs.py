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
    METRICS,
    Judge,
    MetricSummary,
    answer_relevance_similarity,
    evaluate_chain,
    gate,
    summarise_table,
)
from lakerag.settings import Settings
from lakerag.chain.llm import model_key
from lakerag.lakehouse.tables import EVAL_JUDGMENTS, EVAL_QUESTIONS, SILVER_DOCUMENTS, SILVER_SECTIONS, merge_into

log = logging.getLogger(__name__)
EVAL_SETS = ("generated", "debian-faq")
EVALUATOR = "lakerag-evaluation"  # the user name evaluation's traces carry
TAG_VERSION, TAG_SET, TAG_FINGERPRINT = "lakerag.model_version", "lakerag.eval_set", "lakerag.eval_fingerprint"


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


def _tag_filter(**tags: str) -> str:
    """An MLflow filter string over lakerag tags; values are checked, not quoted blindly."""
    for value in tags.values():
        if not re.fullmatch(r"[\w.:+\-]+", value):
            raise ValueError(f"unexpected characters in tag value {value!r}")
    names = {"version": TAG_VERSION, "eval_set": TAG_SET, "fingerprint": TAG_FINGERPRINT}
    return " and ".join(f"tags.`{names[key]}` = '{value}'" for key, value in tags.items())


def evaluated_before(experiment_id: str, version: str, eval_set: str, print_: str) -> bool:
    import mlflow

    runs = mlflow.search_runs([experiment_id], filter_string=_tag_filter(version=version, eval_set=eval_set,
                                                                         fingerprint=print_))
    return len(runs) > 0


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


def run_evaluation(spark: SparkSession, lakehouse: Lakehouse, settings: Settings, model_uri: str, version: str,
                   eval_set: str, experiment_id: str, use_judge: bool,
                   answers: bool = True) -> dict[str, Any] | None:
    """Evaluate one model version on one question set, log it to MLflow; None if this version was
    already evaluated on exactly these questions. answers=False evaluates the retriever only."""
    import mlflow

    from lakerag.chain.llm import make_llm
    from lakerag.chain.registry import load_chain

    config = settings.evaluation
    questions = load_questions(spark, lakehouse, eval_set, config.max_questions)
    if questions.empty:
        raise NoQuestions(f"no questions in the {eval_set!r} set: run `lakerag generate-eval-set` (its test "
                          "split may still be empty)" if eval_set == "generated" else "the Debian FAQ is not in silver")
    print_ = fingerprint(questions)
    # what was measured is part of the identity: a run without the judge does not stand for one with it
    mode = "retrieval-only" if not answers else f"full+judge:{model_key(settings)}" if use_judge else "full+nojudge"
    if evaluated_before(experiment_id, version, eval_set, print_ + mode):
        log.info("version %s already evaluated on these %d %s questions", version, len(questions), eval_set)
        return None
    judge = None
    judgments = lakehouse.table(EVAL_JUDGMENTS.name)
    if use_judge and answers:
        cache = {r.judgment_id: r.asDict() for r in spark.table(judgments).collect()}
        judge = Judge(make_llm(settings.llm), model_key(settings), config, cache)
    model = load_chain(model_uri)
    index_version = model.get_raw_model().chain.retriever.version
    predict = answers_from(model, evaluator(spark, lakehouse)) if answers else retrieval_only(model)
    table = evaluate_chain(predict, questions, judge,
                           answer_relevance_similarity(settings.models.embedding), config)
    summary = summarise_table(table, config)
    if judge is not None and judge.new:
        now = datetime.now(timezone.utc)
        rows = [{"judgment_id": key, "judge": judge.name, "created_at": now, **value} for key, value in judge.new.items()]
        merge_into(spark, judgments, spark.createDataFrame(rows, EVAL_JUDGMENTS.schema), EVAL_JUDGMENTS.key)
    with mlflow.start_run(run_name=f"evaluate-{eval_set}-v{version}") as run:
        mlflow.set_tags({TAG_VERSION: version, TAG_SET: eval_set, TAG_FINGERPRINT: print_ + mode,
                         "lakerag.model_uri": model_uri, "lakerag.eval_mode": mode})
        mlflow.log_params({"questions": len(questions), "k": config.k, "judge": judge.name if judge else "none",
                           "judge_calls": judge.calls if judge else 0, "resamples": config.bootstrap_resamples,
                           "index_version": index_version["version"], "index_backend": index_version["backend"]})
        log_summary(summary)
        mlflow.log_table(table.assign(retrieved=table["retrieved"].map(json.dumps)), "per_question.json")
        mlflow.log_text(report_html(f"lakerag evaluation: {eval_set}, model version {version}", table, summary,
                                    config.confidence), "report.html")
    return {"run_id": run.info.run_id, "summary": summary, "table": table}


def log_summary(summary: dict[str, MetricSummary]) -> None:
    """Log mean, interval and NaN rate of every metric to the active MLflow run."""
    import mlflow

    for metric, s in summary.items():
        key = metric.replace("@", "_at_")
        mlflow.log_metrics({f"{key}_mean": s.mean, f"{key}_ci_low": s.ci_low, f"{key}_ci_high": s.ci_high,
                            f"{key}_nan_rate": s.nan_rate})


def summary_of_run(run) -> dict[str, MetricSummary]:
    """MetricSummary per metric from an evaluation run's logged metrics."""
    values = run.data.metrics
    out = {}
    for metric in METRICS:
        key = metric.replace("@", "_at_")
        out[metric] = MetricSummary(values.get(f"{key}_mean", float("nan")), values.get(f"{key}_ci_low", float("nan")),
                                    values.get(f"{key}_ci_high", float("nan")), 0,
                                    values.get(f"{key}_nan_rate", float("nan")))
    return out


def latest_evaluation(experiment_id: str, version: str, eval_set: str):
    """The newest evaluation run of a model version on a question set, or None."""
    import mlflow

    runs = mlflow.search_runs([experiment_id], filter_string=_tag_filter(version=version, eval_set=eval_set),
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    return runs[0] if runs else None


def promote(name: str, experiment_id: str, eval_set: str, metrics: tuple) -> tuple[bool, str]:
    """Move @champion to @challenger's version if the gate passes; (promoted, explanation)."""
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
        return False, "champion and challenger were evaluated on different questions: evaluate both again"
    passed, table = gate(summary_of_run(old), summary_of_run(new), metrics)
    if passed:
        client.set_registered_model_alias(name, "champion", challenger)
    verdict = (f"version {challenger} is now @champion (was {champion})" if passed else
               f"refused: version {challenger} is worse than @champion version {champion}")
    return passed, f"{verdict}\n{table.to_string(index=False)}"
