"""Evaluation of a chain on a question set: retrieval metrics from ids (ranx), answer metrics in
the Ragas sense from one LLM-judge call per question (cached by content hash, failures counted
as NaN and never averaged away), bootstrap confidence intervals, and the promotion gate.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
from ranx import Qrels, Run, evaluate
from scipy.stats import bootstrap

from lakerag.ingest.parse_pool import content_id
from lakerag.chain.llm import LLM, LLMError
from lakerag.settings import EvaluationSettings
from lakerag.chain.llm import MalformedOutput, json_in

log = logging.getLogger(__name__)
RETRIEVAL = ("recall@k", "mrr", "ndcg@k", "context_precision")
JUDGED = ("faithfulness", "answer_relevance", "context_recall", "answer_correctness")
METRICS = RETRIEVAL + JUDGED + ("citation_accuracy",)


def retrieval_scores(questions: pd.DataFrame, retrieved: list[list[str]], k: int) -> pd.DataFrame:
    """Per question: recall@k, MRR and nDCG@k (ranx) of the source section among the retrieved
    section ids, and context precision (mean precision@i over the ranks i holding it)."""
    qrels = Qrels({qid: {sid: 1} for qid, sid in zip(questions["question_id"], questions["section_id"])})
    run_dict = {qid: ({sid: 1.0 / rank for rank, sid in enumerate(ids, 1)} or {"<none>": 0.0})
                for qid, ids in zip(questions["question_id"], retrieved)}
    names = [f"recall@{k}", "mrr", f"ndcg@{k}"]
    per_query = evaluate(qrels, Run(run_dict), names, return_mean=False, make_comparable=True)
    scores = pd.DataFrame({"recall@k": per_query[names[0]], "mrr": per_query["mrr"], "ndcg@k": per_query[names[2]]},
                          index=list(qrels.keys()))
    scores = scores.reindex(questions["question_id"]).reset_index(drop=True)
    scores["context_precision"] = [context_precision(ids, sid) for ids, sid in zip(retrieved, questions["section_id"])]
    return scores


def context_precision(retrieved: list[str], relevant: str) -> float:
    """Ragas context precision with one relevant context: sum over its ranks i of precision@i,
    divided by the number of relevant contexts retrieved (0 when it is not retrieved)."""
    hits, total = 0, 0.0
    for rank, section_id in enumerate(retrieved, 1):
        if section_id == relevant:
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


def citation_accuracy(citations: list[dict], source: dict[str, Any]) -> float:
    """Share of the answer's citations that point into the source section's document and pages."""
    if not citations:
        return float("nan")
    good = [c["doc_id"] == source["doc_id"] and c["page_start"] <= source["page_end"]
            and source["page_start"] <= c["page_end"] for c in citations]
    return float(np.mean(good))


_FLAG = {"type": "boolean"}
# bounded so the longest judgment fits evaluation.judge_max_new_tokens: a grammar fixes the
# shape, not the length, and JSON cut off by the token limit is malformed
_TEXT = {"type": "string", "maxLength": 150}
JUDGMENT_SCHEMA = {
    "type": "object",
    "properties": {
        "answer_claims": {"type": "array", "maxItems": 5, "items": {
            "type": "object", "properties": {"claim": _TEXT, "in_contexts": _FLAG, "in_reference": _FLAG},
            "required": ["claim", "in_contexts", "in_reference"]}},
        "reference_statements": {"type": "array", "minItems": 1, "maxItems": 5, "items": {
            "type": "object", "properties": {"statement": _TEXT, "in_contexts": _FLAG, "in_answer": _FLAG},
            "required": ["statement", "in_contexts", "in_answer"]}},
        "answer_questions": {"type": "array", "items": _TEXT, "minItems": 1, "maxItems": 3},
    },
    "required": ["answer_claims", "reference_statements", "answer_questions"],
}


def parse_judgment(text: str) -> dict[str, Any]:
    """Judge output -> validated {answer_claims, reference_statements, answer_questions}."""
    data = json_in(text, dict)
    claims, statements = data.get("answer_claims"), data.get("reference_statements")
    if not isinstance(claims, list) or not all(isinstance(c, dict) and isinstance(c.get("in_contexts"), bool)
                                               and isinstance(c.get("in_reference"), bool) for c in claims):
        raise MalformedOutput('"answer_claims" must list objects with boolean in_contexts and in_reference')
    if not isinstance(statements, list) or not statements or not all(
            isinstance(s, dict) and isinstance(s.get("in_contexts"), bool) and isinstance(s.get("in_answer"), bool)
            for s in statements):
        raise MalformedOutput('"reference_statements" must list objects with boolean in_contexts and in_answer')
    questions = data.get("answer_questions")
    if not isinstance(questions, list) or not all(isinstance(q, str) and q.strip() for q in questions):
        raise MalformedOutput('"answer_questions" must be a list of strings')
    return {"answer_claims": claims, "reference_statements": statements, "answer_questions": questions}


def judged_scores(judgment: dict[str, Any] | None, question: str,
                  similarity: Callable[[str, list[str]], float]) -> dict[str, float]:
    """The four judged metrics from one judgment (NaN for all when the judge failed):
    faithfulness = claims of the answer supported by the contexts / claims;
    context recall = reference statements supported by the contexts / statements;
    answer correctness = F1 of (claims supported by the reference / claims) and (reference
    statements the answer says / statements);
    answer relevance = mean cosine between the question and questions the judge derives from the answer."""
    if judgment is None:
        return dict.fromkeys(JUDGED, float("nan"))
    claims, statements = judgment["answer_claims"], judgment["reference_statements"]
    faithfulness = np.mean([c["in_contexts"] for c in claims]) if claims else float("nan")
    precision = np.mean([c["in_reference"] for c in claims]) if claims else 0.0
    recall = np.mean([s["in_answer"] for s in statements])
    correctness = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    relevance = similarity(question, judgment["answer_questions"]) if judgment["answer_questions"] else 0.0
    return {"faithfulness": float(faithfulness), "answer_relevance": float(relevance),
            "context_recall": float(np.mean([s["in_contexts"] for s in statements])),
            "answer_correctness": float(correctness)}


class Judge:
    """LLM judge calls, cached by a hash of judge, seed and prompt, with failures recorded."""

    def __init__(self, llm: LLM, name: str, config: EvaluationSettings, cache: dict[str, dict[str, Any]]):
        self.llm, self.name, self.config = llm, name, config
        self.cache = cache  # judgment_id -> {"status", "response", "error"}; rows already stored
        self.new: dict[str, dict[str, Any]] = {}  # judgments made in this run, to store
        self.calls = 0
        self.transient_failures = 0

    def judge(self, question: str, contexts: list[str], reference: str, answer: str) -> dict[str, Any] | None:
        """The validated judgment, or None when the judge failed (now or in the cached call)."""
        prompt = self.config.judge_prompt.format(question=question, contexts="\n---\n".join(contexts),
                                                 reference=reference, answer=answer)
        judgment_id = content_id(self.name, str(self.config.seed), prompt)
        found = self.cache.get(judgment_id) or self.new.get(judgment_id)
        if found is None:
            self.calls += 1
            try:
                reply = self.llm.chat([{"role": "user", "content": prompt}],
                                      max_tokens=self.config.judge_max_new_tokens, temperature=0.0,
                                      schema=JUDGMENT_SCHEMA)
            except LLMError as err:
                # the backend failed, not the judge: counted as NaN now, asked again next run
                log.warning("judge call failed: %s", err)
                self.transient_failures += 1
                return None
            try:
                found = {"status": "ok", "response": json.dumps(parse_judgment(reply.text)), "error": None}
            except MalformedOutput as err:
                found = {"status": "failed", "response": None, "error": f"malformed judgment: {err}"}
            self.new[judgment_id] = found
        return json.loads(found["response"]) if found["status"] == "ok" else None


@dataclass(frozen=True)
class MetricSummary:
    """Mean of one metric over the questions the judge could score, with its interval."""

    mean: float
    ci_low: float
    ci_high: float
    scored: int
    nan_rate: float  # share of questions without a score (judge failures, no citations)


def summarise(values: pd.Series, resamples: int, confidence: float, seed: int) -> MetricSummary:
    """Mean and percentile-bootstrap interval of the non-NaN values; NaNs are counted, not averaged."""
    present = values.dropna().to_numpy(dtype=float)
    nan_rate = 1.0 - len(present) / len(values) if len(values) else float("nan")
    if not len(present):
        return MetricSummary(float("nan"), float("nan"), float("nan"), 0, nan_rate)
    mean = float(present.mean())
    if len(present) < 2 or np.all(present == present[0]):
        return MetricSummary(mean, mean, mean, len(present), nan_rate)
    interval = bootstrap((present,), np.mean, n_resamples=resamples, confidence_level=confidence,
                         method="percentile", random_state=seed).confidence_interval
    return MetricSummary(mean, float(interval.low), float(interval.high), len(present), nan_rate)


def gate(champion: pd.DataFrame, challenger: pd.DataFrame, metrics: tuple,
         config: EvaluationSettings) -> tuple[bool, pd.DataFrame]:
    """The paired gate: per question, challenger minus champion on the same questions, with a
    bootstrap interval of the mean difference; refused on a metric when the interval lies below
    zero or the mean drop exceeds evaluation.max_drop. Returns (promote, verdict table)."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"evaluation.gate_metrics: unknown {unknown}; choose from {list(METRICS)}")
    old, new = champion.set_index("question_id"), challenger.set_index("question_id")
    if set(old.index) != set(new.index):
        raise ValueError(f"the two evaluations asked different questions ({len(old)} and {len(new)}, "
                         f"{len(set(old.index) & set(new.index))} shared): evaluate both on the same set")
    new = new.reindex(old.index)
    rows = []
    for metric in metrics:
        before, after = old[metric].astype(float), new[metric].astype(float)
        # a question counts when both scored it: a judge failure on one side is no difference
        difference = summarise(after - before, config.bootstrap_resamples, config.confidence, config.seed)
        if before.notna().any() and after.isna().all():
            verdict = "refused: the challenger has no scores"
        elif difference.scored == 0:
            verdict = "not scored by either"
        elif difference.ci_high < 0:
            verdict = "refused: worse, interval below zero"
        elif -difference.mean > config.max_drop:
            verdict = f"refused: mean drop {-difference.mean:.3f} > max_drop {config.max_drop}"
        else:
            verdict = "not worse"
        rows.append({"metric": metric, "questions": difference.scored, "champion": round(before.mean(), 4),
                     "challenger": round(after.mean(), 4), "difference": round(difference.mean, 4),
                     "interval": f"[{difference.ci_low:.3f}, {difference.ci_high:.3f}]", "verdict": verdict})
    table = pd.DataFrame(rows)
    return bool(not table["verdict"].str.startswith("refused").any()), table


def answer_relevance_similarity(model: str) -> Callable[[str, list[str]], float]:
    """Mean cosine between a question and other questions, with the embedding model."""
    from lakerag.retrieval.encoders import torch_encode

    def similarity(question: str, others: list[str]) -> float:
        vectors = torch_encode(model, [question, *others], 16)
        return float(np.mean(vectors[1:] @ vectors[0]))

    return similarity


def summarise_table(table: pd.DataFrame, config: EvaluationSettings) -> dict[str, MetricSummary]:
    """Every metric's mean, interval and NaN rate."""
    return {metric: summarise(table[metric], config.bootstrap_resamples, config.confidence, config.seed)
            for metric in METRICS}
