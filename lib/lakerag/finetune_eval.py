"""Is a fine-tuning run better than the base? The evaluation step of `lakerag finetune-embeddings`.

Section retrieval over the latest index's sections, on the held-out split (the generated test
split, never trained on) and on the Debian FAQ's own questions: the base vs the fine-tuned
embedding model (dense cosine), and the base model's top `retrieval.rerank_candidates` reordered
by the trained cross-encoder vs not. recall@5 and nDCG@10 (ranx) per question, their means with
bootstrap intervals, and each system's paired difference to the base with its interval.

Promotion rule, "only if better": a system is promoted when, on the held-out split, the interval
of its nDCG@10 difference to the base lies wholly above zero, and on no question set is either
metric's difference interval wholly below zero. A promoted model is registered in the MLflow
registry with the alias @champion; one that is not better is only reported.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from lakerag.engine import Lakehouse
from lakerag.evaluation import retrieval_scores, summarise
from lakerag.finetune import TAG_KIND
from lakerag.settings import EvaluationSettings, Settings

log = logging.getLogger(__name__)
HELD_OUT, FAQ = "generated", "debian-faq"
METRIC_CUTOFFS = {"recall@5": ("recall@k", 5), "ndcg@10": ("ndcg@k", 10)}
PRIMARY = "ndcg@10"
BASE, TUNED, RERANKED = "base embedding", "fine-tuned embedding", "base + trained reranker"
ARTIFACT = {TUNED: "embedding_model", RERANKED: "reranker_model"}


class NoFinetuneRun(LookupError):
    """No fine-tuning run to evaluate."""


def dense_rankings(model: str, queries: list[str], ids: list[str], texts: list[str], depth: int) -> list[list[str]]:
    """Section ids by cosine between each query and each text under `model`, best first, top `depth`."""
    from lakerag.models import load_sentence_model

    encoder = load_sentence_model(model)
    corpus = encoder.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    scores = encoder.encode(queries, normalize_embeddings=True, show_progress_bar=False) @ corpus.T
    return [[ids[i] for i in np.argsort(-row, kind="stable")[:depth]] for row in scores]


def cross_encoder_reranked(reranker: str, queries: list[str], rankings: list[list[str]], text_of: dict[str, str],
                           depth: int) -> list[list[str]]:
    """The top `depth` of each ranking reordered by the cross-encoder's scores, the rest after."""
    from sentence_transformers.cross_encoder import CrossEncoder

    model = CrossEncoder(reranker, device="cpu")
    out = []
    for query, ranking in zip(queries, rankings):
        head = ranking[:depth]
        scores = model.predict([(query, text_of[s]) for s in head], show_progress_bar=False)
        out.append([head[i] for i in np.argsort(-np.asarray(scores), kind="stable")] + ranking[depth:])
    return out


def per_question(questions: pd.DataFrame, rankings: list[list[str]]) -> pd.DataFrame:
    """recall@5 and nDCG@10 of each question's source section in its ranking."""
    return pd.DataFrame({name: retrieval_scores(questions, rankings, cutoff)[column]
                         for name, (column, cutoff) in METRIC_CUTOFFS.items()})


def comparison_table(scores: dict[str, pd.DataFrame], config: EvaluationSettings) -> pd.DataFrame:
    """Per-question scores of each system (BASE among them) -> one row per system and metric: mean
    and interval, and the mean paired difference to the base with its interval (NaN for the base)."""
    rows = []
    for system, table in scores.items():
        for metric in METRIC_CUTOFFS:
            level = summarise(table[metric], config.bootstrap_resamples, config.confidence, config.seed)
            row = {"system": system, "metric": metric, "mean": level.mean, "ci_low": level.ci_low,
                   "ci_high": level.ci_high, "delta": np.nan, "delta_low": np.nan, "delta_high": np.nan}
            if system != BASE:
                # paired: the same questions under both systems, so resample their differences
                delta = summarise(table[metric] - scores[BASE][metric], config.bootstrap_resamples,
                                  config.confidence, config.seed)
                row |= {"delta": delta.mean, "delta_low": delta.ci_low, "delta_high": delta.ci_high}
            rows.append(row)
    return pd.DataFrame(rows)


def verdict(tables: dict[str, pd.DataFrame], system: str) -> tuple[bool, str]:
    """The promotion rule for `system` over the comparison tables of each question set -> (better, why)."""
    if HELD_OUT not in tables:
        return False, "no held-out questions: cannot tell"
    rows = {(name, r.metric): r for name, table in tables.items()
            for r in table[table["system"] == system].itertuples(index=False)}
    primary = rows[(HELD_OUT, PRIMARY)]
    shown = f"{PRIMARY} on the held-out split {primary.delta:+.3f} [{primary.delta_low:+.3f}, {primary.delta_high:+.3f}]"
    worse = [f"{name} {metric} {r.delta:+.3f} [{r.delta_low:+.3f}, {r.delta_high:+.3f}]"
             for (name, metric), r in rows.items() if r.delta_high < 0]
    if worse:
        return False, "worse than the base beyond the interval: " + "; ".join(worse)
    if not primary.delta_low > 0:
        return False, f"not better beyond the interval: {shown}"
    return True, f"better: {shown}, not worse elsewhere"


def finetune_run(experiment_id: str, run_id: str | None):
    """The given fine-tuning run, or the newest one in the experiment."""
    import mlflow

    if run_id:
        return mlflow.get_run(run_id)
    runs = mlflow.search_runs([experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'finetune'",
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    if not runs:
        raise NoFinetuneRun("no fine-tuning run in this experiment: run `lakerag finetune-embeddings` first")
    return runs[0]


def register(name: str, run_id: str, artifact: str, description: str) -> str:
    """Register the run's model folder as a new version of `name` with alias @champion; its version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, source=f"runs:/{run_id}/{artifact}", run_id=run_id,
                                          description=description)
    client.set_registered_model_alias(name, "champion", version.version)
    return str(version.version)


@dataclass
class ComparisonReport:
    """What evaluating a fine-tuning run found and did."""

    finetune_run_id: str
    run_id: str
    tables: dict[str, pd.DataFrame]
    questions: dict[str, int]
    verdicts: dict[str, tuple[bool, str]]
    registered: dict[str, str] = field(default_factory=dict)  # system -> registered version


def compare_systems(questions: dict[str, pd.DataFrame], sections: pd.DataFrame, base: str, tuned: str | None,
                    reranker: str | None, settings: Settings) -> dict[str, pd.DataFrame]:
    """Comparison table per question set (columns question_id, question, section_id) over the
    sections (section_id, text): the base model, and the fine-tuned model and trained reranker where given."""
    ids, texts = sections["section_id"].tolist(), sections["text"].tolist()
    text_of = dict(zip(ids, texts))
    depth = max(cutoff for _, cutoff in METRIC_CUTOFFS.values())
    tables = {}
    for name, frame in questions.items():
        queries = frame["question"].tolist()
        log.info("ranking %d sections for %d %s questions", len(ids), len(queries), name)
        base_rankings = dense_rankings(base, queries, ids, texts, max(depth, settings.retrieval.rerank_candidates))
        scores = {BASE: per_question(frame, base_rankings)}
        if tuned:
            scores[TUNED] = per_question(frame, dense_rankings(tuned, queries, ids, texts, depth))
        if reranker:
            scores[RERANKED] = per_question(frame, cross_encoder_reranked(
                reranker, queries, base_rankings, text_of, settings.retrieval.rerank_candidates))
        tables[name] = comparison_table(scores, settings.evaluation)
    return tables


def evaluate_finetuned(spark: SparkSession, lakehouse: Lakehouse, settings: Settings, index_folder: Path,
                       experiment_id: str, registered_names: dict[str, str], run_id: str | None = None) -> ComparisonReport:
    """Compare a fine-tuning run's models with the base on both question sets, log the comparison to
    MLflow and register each model that the rule calls better under registered_names[system]."""
    import mlflow

    from lakerag.eval_jobs import EVAL_SETS, NoQuestions, load_questions

    trained = finetune_run(experiment_id, run_id)
    questions = {name: load_questions(spark, lakehouse, name, settings.evaluation.max_questions) for name in EVAL_SETS}
    questions = {name: frame for name, frame in questions.items() if not frame.empty}
    if HELD_OUT not in questions:
        raise NoQuestions("the generated test split is empty: the held-out questions decide promotion; run "
                          "`lakerag generate-eval-set`")
    sections = pd.read_parquet(Path(index_folder) / "sections.parquet", columns=["section_id", "text"])
    with tempfile.TemporaryDirectory(prefix="lakerag-finetuned-") as scratch:
        folders = {system: mlflow.artifacts.download_artifacts(run_id=trained.info.run_id, artifact_path=artifact,
                                                               dst_path=scratch)
                   for system, artifact in ARTIFACT.items()}
        tables = compare_systems(questions, sections, settings.models.embedding, folders[TUNED], folders[RERANKED],
                                 settings)
    verdicts = {system: verdict(tables, system) for system in ARTIFACT}
    with mlflow.start_run(run_name="evaluate-finetuned") as run:
        mlflow.set_tags({TAG_KIND: "finetune-evaluation", "lakerag.finetune_run": trained.info.run_id,
                         **{f"lakerag.verdict.{ARTIFACT[s]}": why for s, (_, why) in verdicts.items()}})
        mlflow.log_params({"base_embedding": settings.models.embedding, "index": str(index_folder),
                           **{f"questions_{name}": len(frame) for name, frame in questions.items()}})
        for name, table in tables.items():
            mlflow.log_table(table, f"comparison_{name}.json")
            for r in table.itertuples(index=False):
                key = f"{name}.{r.system.replace(' ', '_').replace('+', 'with')}.{r.metric.replace('@', '_at_')}"
                mlflow.log_metrics({f"{key}_mean": r.mean, f"{key}_ci_low": r.ci_low, f"{key}_ci_high": r.ci_high})
    report = ComparisonReport(trained.info.run_id, run.info.run_id, tables,
                              {name: len(frame) for name, frame in questions.items()}, verdicts)
    for system, (better, why) in verdicts.items():
        if better:
            report.registered[system] = register(registered_names[system], trained.info.run_id, ARTIFACT[system],
                                                 f"{system} from fine-tuning run {trained.info.run_id}; {why}")
    return report
