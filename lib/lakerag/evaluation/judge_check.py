"""The judge checked before it is trusted: on questions whose authors wrote the answer (the Debian
FAQ), the judge scores the authors' answer to each question, which should pass, and the authors'
answer to a different question, which should fail on faithfulness, correctness and relevance
(the contexts and the reference stay the question's own, so context recall should pass in both).
Its accuracy per metric decides whether the gate may use that metric.
"""
from __future__ import annotations

from typing import Callable

import pandas as pd

from lakerag.evaluation.metrics import JUDGED, Judge, MetricSummary, judged_scores, summarise
from lakerag.settings import EvaluationSettings

PASS = 0.5  # a judged score at or above this is a pass
# metric -> (expected verdict on the question's own answer, on another question's answer)
EXPECTED = {"faithfulness": (True, False), "answer_correctness": (True, False),
            "answer_relevance": (True, False), "context_recall": (True, True)}
ANSWER_CHARS = 400  # the authors' answer as an answer: the start of their section


def authors_answer(text: str, limit: int = ANSWER_CHARS) -> str:
    """The start of a section as an answer: whole sentences up to `limit` characters (at least one)."""
    cut = text[:limit]
    end = cut.rfind(". ")
    return cut[: end + 1] if end > 0 else cut


def judge_cases(questions: pd.DataFrame) -> pd.DataFrame:
    """Two cases per question (columns question_id, question, reference_answer): its own answer,
    and the answer of the next question in the set's order (a different section)."""
    if len(questions) < 2:
        raise ValueError("the judge check needs at least two questions")
    rows = questions.reset_index(drop=True)
    others = rows["reference_answer"].shift(-1).fillna(rows["reference_answer"].iloc[0])
    own = rows.assign(case="own", answer=rows["reference_answer"].map(authors_answer))
    other = rows.assign(case="other", answer=others.map(authors_answer))
    return pd.concat([own, other], ignore_index=True)[["question_id", "question", "reference_answer", "case", "answer"]]


def check_judge(judge: Judge, similarity: Callable[[str, list[str]], float], questions: pd.DataFrame,
                config: EvaluationSettings) -> tuple[pd.DataFrame, dict[str, MetricSummary]]:
    """Judge every case with the question's own section as context and reference; returns the
    cases with each metric's score and whether the verdict was right (a failed judgment is
    wrong), and the accuracy per metric with its bootstrap interval."""
    cases = judge_cases(questions)
    scores = [judged_scores(judge.judge(row.question, [row.reference_answer], row.reference_answer, row.answer),
                            row.question, similarity) for row in cases.itertuples(index=False)]
    table = pd.concat([cases, pd.DataFrame(scores)], axis=1)
    accuracy = {}
    for metric in JUDGED:
        expected = table["case"].map({"own": EXPECTED[metric][0], "other": EXPECTED[metric][1]})
        table[f"{metric}_right"] = ((table[metric] >= PASS) == expected) & table[metric].notna()
        accuracy[metric] = summarise(table[f"{metric}_right"].astype(float), config.bootstrap_resamples,
                                     config.confidence, config.seed)
    return table, accuracy
