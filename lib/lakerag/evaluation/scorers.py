"""lakerag's metrics as MLflow GenAI scorers, and the evaluation run through `mlflow.genai.evaluate`:
each question's answer is a trace in the evaluation run, and each metric an assessment on it, so
MLflow's evaluation view shows them beside our HTML report.

A metric that cannot be scored for a question (the judge failed, the answer made no citation) is
an assessment with an error saying why, never a number: MLflow drops a result table holding NaN,
and an average must not count it.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import pandas as pd
from mlflow.entities import AssessmentError, Feedback
from mlflow.genai.scorers import Scorer, scorer

from lakerag.evaluation.metrics import (
    JUDGED,
    METRICS,
    RETRIEVAL,
    Judge,
    citation_accuracy,
    judged_scores,
    retrieval_scores,
)
from lakerag.settings import EvaluationSettings

Predict = Callable[[list[dict]], list[dict]]


def assessment_name(metric: str) -> str:
    """MLflow's name for a metric: "@" is not allowed in metric names."""
    return metric.replace("@", "_at_")


def _value(metric: str, value: float, why: str, rationale: str | None = None) -> Feedback:
    """A Feedback with the value, or with an error saying why there is none."""
    if pd.isna(value):
        return Feedback(name=assessment_name(metric), error=AssessmentError(error_code="NOT_SCORED", error_message=why))
    return Feedback(name=assessment_name(metric), value=float(value), rationale=rationale)


def chain_scorers(config: EvaluationSettings, judge: Judge | None,
                  similarity: Callable[[str, list[str]], float], answers: bool = True) -> list[Scorer]:
    """Scorers for every metric: retrieval from the retrieved section ids, citation accuracy from
    the answer's citations (not without answers), and (with a judge) the four judged metrics
    from one judgment."""

    @scorer(name="retrieval")
    def retrieval(outputs: dict, expectations: dict) -> list[Feedback]:
        one = pd.DataFrame([{"question_id": "q", "section_id": expectations["section_id"]}])
        scores = retrieval_scores(one, [outputs["retrieved"]], config.k).iloc[0]
        return [_value(metric, scores[metric], "") for metric in RETRIEVAL]

    @scorer(name="citations")
    def citations(outputs: dict, expectations: dict) -> Feedback:
        # only citations the model made count: its fallback "all sources" list is not a citation
        return _value("citation_accuracy", citation_accuracy(outputs["citations"], expectations),
                      "the answer cites nothing")

    scorers = [retrieval, citations] if answers else [retrieval]
    if judge is not None:
        @scorer(name="judge")
        def judged(inputs: dict, outputs: dict, expectations: dict) -> list[Feedback]:
            judgment = judge.judge(inputs["question"], outputs["contexts"], expectations["reference_answer"],
                                   outputs["answer"])
            scores = judged_scores(judgment, inputs["question"], similarity)
            claims = None if judgment is None else "; ".join(
                f"{c['claim']} [contexts: {c['in_contexts']}, reference: {c['in_reference']}]"
                for c in judgment["answer_claims"])
            return [_value(metric, scores[metric], "the judge gave no valid judgment", claims) for metric in JUDGED]

        scorers.append(judged)
    return scorers


def evaluate_chain(predict: Predict, questions: pd.DataFrame, judge: Judge | None,
                   similarity: Callable[[str, list[str]], float], config: EvaluationSettings,
                   answers: bool = True) -> pd.DataFrame:
    """Ask every question (columns question_id, question, reference_answer, section_id, doc_id,
    page_start, page_end) through `mlflow.genai.evaluate` (in the active run, or a new one) and
    score it; one row per question, in their order, with the answer, the retrieved section ids,
    the trace id and every metric (NaN where not scored or no judge was given; answers=False:
    the predictions are retrieval only, so citations are not scored)."""
    import mlflow

    # one question at a time: the chain's and the judge's llama.cpp threads must not share 2 cores;
    # and no trial prediction (it would ask the first question twice)
    os.environ["MLFLOW_GENAI_EVAL_MAX_WORKERS"] = "1"
    os.environ["MLFLOW_GENAI_EVAL_MAX_SCORER_WORKERS"] = "1"
    os.environ["MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION"] = "true"

    @mlflow.trace(name="evaluation question", span_type="AGENT")
    def ask(question: str) -> dict[str, Any]:
        [out] = predict([{"messages": [{"role": "user", "content": question}], "filters": []}])
        return {"answer": out["answer"], "retrieved": out["retrieved"], "citations": out["citations"],
                "contexts": [c["text"] for c in out["contexts"]]}

    expected = ("question_id", "section_id", "doc_id", "page_start", "page_end", "reference_answer")
    data = [{"inputs": {"question": row["question"]}, "expectations": {key: row[key] for key in expected}}
            for row in questions.to_dict("records")]
    result = mlflow.genai.evaluate(data=data, predict_fn=ask, scorers=chain_scorers(config, judge, similarity, answers))
    if result.result_df is None:
        raise RuntimeError(f"mlflow.genai.evaluate returned no per-question results (run {result.run_id})")
    scored = result.result_df.set_index("question_id/value").reindex(questions["question_id"])
    table = questions.reset_index(drop=True).copy()
    table["answer"] = [r["answer"] for r in scored["response"]]
    table["retrieved"] = [r["retrieved"] for r in scored["response"]]
    table["trace_id"] = scored["trace_id"].to_numpy()
    for metric in METRICS:
        column = f"{assessment_name(metric)}/value"
        table[metric] = scored[column].to_numpy(dtype=float) if column in scored else float("nan")
    return table
