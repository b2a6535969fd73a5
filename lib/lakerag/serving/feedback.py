"""The chat page's Helpful / Not helpful, stored as an MLflow assessment on the answer's trace
(`mlflow.log_feedback`): the same call against the local sqlite store and a Databricks
workspace, and what `generate-eval-set` reads thumbs-down from."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from lakerag.access.identity import TRACE_USER
from lakerag.chain.rag import BadRequest

VERDICTS = ("up", "down")
FEEDBACK_NAME = "user_feedback"  # the assessment's name; value True = helpful
MAX_COMMENT_CHARS = 2000
TRACE_WAIT_TRIES = 6  # about 4 s in all


@dataclass(frozen=True)
class Feedback:
    """One thumbs up/down on an answer's trace, validated."""

    trace_id: str
    verdict: str
    comment: str | None

    @classmethod
    def parse(cls, payload: Any) -> "Feedback":
        """A request body -> Feedback; raises BadRequest saying what is wrong."""
        if not isinstance(payload, dict):
            raise BadRequest('feedback must be a JSON object with "trace_id" and "verdict"')
        verdict = payload.get("verdict")
        if verdict not in VERDICTS:
            raise BadRequest(f'"verdict" must be "up" or "down", not {verdict!r}')
        trace_id = payload.get("trace_id")
        if not isinstance(trace_id, str) or not trace_id.strip() or len(trace_id) > 200:
            raise BadRequest('"trace_id" must be the trace id the answer came with')
        comment = payload.get("comment") or None
        if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS):
            raise BadRequest(f'"comment" must be a string of at most {MAX_COMMENT_CHARS} characters')
        return cls(trace_id.strip(), verdict, comment.strip() if comment else None)


def log_feedback(feedback: Feedback, user: str) -> str:
    """Attach `user`'s feedback to its trace; returns the assessment id. Raises LookupError when
    the tracking store has no such trace, PermissionError when someone else asked the question."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    # A click right after the answer can beat the background trace writer (and the end of the
    # streamed request's span): flush it and look again for a moment before giving up.
    for attempt in range(TRACE_WAIT_TRIES):
        if (trace := mlflow.get_trace(feedback.trace_id)) is not None:
            break
        mlflow.flush_trace_async_logging()
        time.sleep(0.25 * attempt)
    else:
        raise LookupError(f"no trace {feedback.trace_id!r} in the tracking store")
    if trace.info.trace_metadata.get(TRACE_USER) != user:
        raise PermissionError(f"trace {feedback.trace_id!r} is not one of your answers: feedback goes on your own")
    assessment = mlflow.log_feedback(
        trace_id=feedback.trace_id, name=FEEDBACK_NAME, value=feedback.verdict == "up", rationale=feedback.comment,
        source=AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id=user))
    return assessment.assessment_id
