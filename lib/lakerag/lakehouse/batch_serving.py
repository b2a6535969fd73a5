"""Batch serving: answer the questions of serving_questions with a registered chain, into
serving_answers (one row per question id, MERGEd: a re-run with the same model version answers
nothing already answered and retries failed questions; a new version re-answers everything)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

import pandas as pd
import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession

from lakerag.access.identity import ANONYMOUS, Identity, UserDirectory
from lakerag.chain.registry import resolve_model
from lakerag.chain.responses import agent_request, answer_of
from lakerag.lakehouse.engine import Lakehouse
from lakerag.lakehouse.tables import CITATION, SERVING_ANSWERS, SERVING_QUESTIONS, merge_into
from lakerag.settings import AccessSettings

log = logging.getLogger(__name__)
_loaded: dict[str, object] = {}  # versioned model URI -> pyfunc model, loaded once per Python worker


def answer_questions(questions: DataFrame, model_uri: str, load_uri: str, model_version: str, tracking_uri: str,
                     registry_uri: str, run_time: datetime, identities: dict[str, Identity] | None = None) -> DataFrame:
    """serving_questions rows -> serving_answers rows (mapInPandas; the model loads once per worker),
    each answered for the user its row names (`identities`: user -> Identity; a row without
    a user asks anonymously). A question the chain fails on, or whose user is unknown, gets an
    error row instead of an answer: nothing is dropped."""
    identities = identities or {}
    citation_fields = [f.name for f in CITATION.fields]

    def answer_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import mlflow

        if load_uri not in _loaded:
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(registry_uri)
            _loaded[load_uri] = mlflow.pyfunc.load_model(load_uri)
        model = _loaded[load_uri]
        for batch in batches:
            rows = []
            for question in batch.itertuples(index=False):
                started = time.perf_counter()
                user = question.user if isinstance(question.user, str) else None  # pandas gives NaN for null
                row = {"question_id": question.question_id, "question": question.question, "answer": None,
                       "citations": None, "model_uri": model_uri, "model_version": model_version, "index_version": None,
                       "prompt_tokens": None, "completion_tokens": None, "error": None, "answered_at": run_time,
                       "user": user}
                try:
                    filters = [] if question.filters is None else list(question.filters)
                    if user is not None and user not in identities:
                        raise LookupError(f"unknown user {user!r}: add them to the users file "
                                          "(access.users_file, `lakerag add-user`)")
                    identity = identities[user] if user else ANONYMOUS
                    out = answer_of(model.predict(agent_request(
                        [{"role": "user", "content": question.question}], filters, identity)))
                    row |= {"answer": out["answer"],
                            "citations": [{k: c[k] for k in citation_fields} for c in out["citations"]],
                            "index_version": out["index"]["version"],
                            "prompt_tokens": out["usage"]["prompt_tokens"],
                            "completion_tokens": out["usage"]["completion_tokens"]}
                except Exception as err:  # noqa: BLE001 - recorded in the row, the batch goes on
                    row["error"] = f"{type(err).__name__}: {err}"
                rows.append(row | {"latency_s": time.perf_counter() - started})
            yield pd.DataFrame(rows, columns=[f.name for f in SERVING_ANSWERS.schema.fields])

    return questions.mapInPandas(answer_batches, SERVING_ANSWERS.schema)


@dataclass
class BatchReport:
    model_version: str
    answered: int
    failed: int
    skipped: int  # already answered (without error) by this model version


def run_batch(spark: SparkSession, lakehouse: Lakehouse, model_uri: str, access: AccessSettings = AccessSettings(),
              run_time: datetime | None = None) -> BatchReport:
    """Answer the questions that have no answer from the model version `model_uri` points at,
    each for the user its row names (their groups from the users file access.* names)."""
    import mlflow

    run_time = run_time or datetime.now(timezone.utc)
    # load the resolved version, not the alias: an alias that moves mid-job must not mix versions
    version, load_uri = resolve_model(model_uri)
    answers_table = lakehouse.table(SERVING_ANSWERS.name)
    questions = spark.table(lakehouse.table(SERVING_QUESTIONS.name))
    # failed questions are tried again: the failure may have been passing (an endpoint timeout)
    done = (spark.table(answers_table).filter((F.col("model_version") == version) & F.col("error").isNull())
            .select("question_id"))
    todo = questions.join(done, "question_id", "left_anti")
    total, pending = questions.count(), todo.count()
    if not pending:
        return BatchReport(version, 0, 0, total)
    log.info("answering %d questions with %s (version %s)", pending, model_uri, version)
    # Answers are computed once, staged in memory, then merged: the MERGE must not re-run the model.
    directory = UserDirectory.from_settings(access)
    users = {r.user for r in todo.select("user").distinct().collect() if r.user is not None}
    identities = {user: directory.users[user] for user in users if directory and user in directory.users}
    answered = answer_questions(todo, model_uri, load_uri, version, mlflow.get_tracking_uri(),
                                mlflow.get_registry_uri(), run_time, identities).toPandas()
    staged = spark.createDataFrame(answered, SERVING_ANSWERS.schema)
    merge_into(spark, answers_table, staged, SERVING_ANSWERS.key, matched="UPDATE SET *")
    failed = int(answered["error"].notna().sum())
    return BatchReport(version, len(answered) - failed, failed, total - pending)
