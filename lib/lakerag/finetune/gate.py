"""Is a fine-tuning run better than what we have? `lakerag evaluate-finetuned`, run after
`lakerag finetune-embeddings`.

Section retrieval over the latest index's sections, on the held-out split (the generated test
split, never trained on) and on the Debian FAQ's own questions: the base vs the fine-tuned
embedding model (dense cosine), and the base model's top `retrieval.rerank_candidates` reordered
by the trained cross-encoder vs by the configured reranker (`retrieval.reranker`; vs no reranking
when that is `none`). recall@5 and nDCG@10 (ranx) per question, their means with bootstrap
intervals, and each system's paired difference to what it would replace, with its interval.
This is a stand-in for the live retriever, which ranks chunks (hybrid dense + BM25) and reranks
chunk texts before grouping them into sections: here both models rank whole sections the same
way, so the difference is the model's.

Promotion rule, "only if better": a model is promoted when, on the held-out split, the interval
of its nDCG@10 difference lies wholly above zero (with at least finetune.min_held_out held-out
questions), and on no question set is either metric's difference interval wholly below zero. A
promoted model is registered in the MLflow registry
with the alias @champion; one that is not better is only reported.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from lakerag.lakehouse.engine import Lakehouse
from lakerag.evaluation.metrics import retrieval_scores, summarise
from lakerag.finetune.train import TAG_KIND
from lakerag.weights import load_sentence_model, model_path
from lakerag.settings import EvaluationSettings, Settings

log = logging.getLogger(__name__)
HELD_OUT, FAQ = "generated", "debian-faq"  # the question sets of eval_jobs.EVAL_SETS
METRIC_CUTOFFS = {"recall@5": ("recall@k", 5), "ndcg@10": ("ndcg@k", 10)}
PRIMARY = "ndcg@10"
BASE, TUNED, RERANKED = "base embedding", "fine-tuned embedding", "base + trained reranker"
CONFIGURED = "base + configured reranker"  # retrieval.reranker as set now: what the trained one must beat
ARTIFACT = {TUNED: "embedding_model", RERANKED: "reranker_model"}


class NoFinetuneRun(LookupError):
    """No fine-tuning run to evaluate."""


def dense_rankings(model: str, queries: list[str], ids: list[str], texts: list[str], depth: int) -> list[list[str]]:
    """Section ids by cosine between each query and each text under `model`, best first, top `depth`."""
    encoder = load_sentence_model(model)
    corpus = encoder.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    scores = encoder.encode(queries, normalize_embeddings=True, show_progress_bar=False) @ corpus.T
    return [[ids[i] for i in np.argsort(-row, kind="stable")[:depth]] for row in scores]


def reordered(rankings: list[list[str]], scores: list[np.ndarray], depth: int) -> list[list[str]]:
    """Each ranking's top `depth` sorted by its scores (best first), the rest after in their order."""
    return [[ranking[i] for i in np.argsort(-np.asarray(row), kind="stable")] + ranking[depth:]
            for ranking, row in zip(rankings, scores)]


def cross_encoder_reranked(reranker: str, queries: list[str], rankings: list[list[str]], text_of: dict[str, str],
                           depth: int) -> list[list[str]]:
    """The top `depth` of each ranking reordered by a cross-encoder's scores (reranker: cross-encoder)."""
    from sentence_transformers.cross_encoder import CrossEncoder

    model = CrossEncoder(reranker, device="cpu")
    return reordered(rankings, [model.predict([(query, text_of[s]) for s in ranking[:depth]], show_progress_bar=False)
                                for query, ranking in zip(queries, rankings)], depth)


def rescored(model: str, queries: list[str], rankings: list[list[str]], text_of: dict[str, str],
             depth: int) -> list[list[str]]:
    """The top `depth` of each ranking reordered by cosine under a second bi-encoder (reranker: rescore)."""
    encoder = load_sentence_model(model)
    candidates = sorted({s for ranking in rankings for s in ranking[:depth]})
    vector_of = dict(zip(candidates, encoder.encode([text_of[s] for s in candidates], batch_size=32,
                                                    normalize_embeddings=True, show_progress_bar=False)))
    query_vectors = encoder.encode(queries, normalize_embeddings=True, show_progress_bar=False)
    return reordered(rankings, [np.array([vector_of[s] @ q for s in ranking[:depth]])
                                for q, ranking in zip(query_vectors, rankings)], depth)


def per_question(questions: pd.DataFrame, rankings: list[list[str]]) -> pd.DataFrame:
    """recall@5 and nDCG@10 of each question's source section in its ranking."""
    return pd.DataFrame({name: retrieval_scores(questions, rankings, cutoff)[column]
                         for name, (column, cutoff) in METRIC_CUTOFFS.items()})


def comparison_table(scores: dict[str, pd.DataFrame], config: EvaluationSettings,
                     versus: dict[str, str]) -> pd.DataFrame:
    """Per-question scores of each system -> one row per system and metric: mean and interval, and
    the mean paired difference to the system it is compared with (versus[system]; BASE when not
    named; none for the base itself) with its interval."""
    rows = []
    for system, table in scores.items():
        reference = versus.get(system, BASE)
        for metric in METRIC_CUTOFFS:
            level = summarise(table[metric], config.bootstrap_resamples, config.confidence, config.seed)
            row = {"system": system, "metric": metric, "mean": level.mean, "ci_low": level.ci_low,
                   "ci_high": level.ci_high, "versus": "", "delta": np.nan, "delta_low": np.nan, "delta_high": np.nan}
            if system != BASE:
                # paired: the same questions under both systems, so resample their differences
                delta = summarise(table[metric] - scores[reference][metric], config.bootstrap_resamples,
                                  config.confidence, config.seed)
                row |= {"versus": reference, "delta": delta.mean, "delta_low": delta.ci_low, "delta_high": delta.ci_high}
            rows.append(row)
    return pd.DataFrame(rows)


def verdict(tables: dict[str, pd.DataFrame], system: str, questions: dict[str, int],
            min_held_out: int) -> tuple[bool, str]:
    """The promotion rule for `system` over the comparison tables of each question set (with their
    question counts) -> (better, why)."""
    if questions.get(HELD_OUT, 0) < min_held_out:
        return False, (f"cannot tell: {questions.get(HELD_OUT, 0)} held-out questions, fewer than "
                       f"finetune.min_held_out={min_held_out}")
    rows = {(name, r.metric): r for name, table in tables.items()
            for r in table[table["system"] == system].itertuples(index=False)}
    primary = rows[(HELD_OUT, PRIMARY)]
    shown = (f"{PRIMARY} on the held-out split {primary.delta:+.3f} [{primary.delta_low:+.3f}, "
             f"{primary.delta_high:+.3f}] vs {primary.versus}")
    worse = [f"{name} {metric} {r.delta:+.3f} [{r.delta_low:+.3f}, {r.delta_high:+.3f}] vs {r.versus}"
             for (name, metric), r in rows.items() if r.delta_high < 0]
    if worse:
        return False, "worse beyond the interval: " + "; ".join(worse)
    if not primary.delta_low > 0:
        return False, f"not better beyond the interval: {shown}"
    return True, f"better: {shown}, not worse elsewhere"


def table_lines(table: pd.DataFrame) -> list[str]:
    """A comparison table as aligned text lines, for printing."""
    lines = [f"  {'system':27} {'metric':9} {'mean [interval]':22} paired difference [interval] vs"]
    for r in table.itertuples(index=False):
        change = "" if r.system == BASE else f"{r.delta:+.3f} [{r.delta_low:+.3f}, {r.delta_high:+.3f}] vs {r.versus}"
        lines.append(f"  {r.system:27} {r.metric:9} {r.mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]   {change}")
    return lines


def finetune_run(experiment_id: str, run_id: str | None):
    """The given fine-tuning run, or the newest finished one in the experiment."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if run_id:
        try:
            run = mlflow.get_run(run_id)
        except MlflowException as err:
            raise NoFinetuneRun(f"no MLflow run {run_id!r}: {err.message}") from None
        if run.data.tags.get(TAG_KIND) != "finetune" or run.info.status != "FINISHED":
            raise NoFinetuneRun(f"run {run_id} is not a finished `lakerag finetune-embeddings` run")
        return run
    runs = mlflow.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=1,
                              filter_string=f"tags.`{TAG_KIND}` = 'finetune' and attributes.status = 'FINISHED'",
                              output_format="list")
    if not runs:
        raise NoFinetuneRun("no finished fine-tuning run in this experiment: run `lakerag finetune-embeddings` first")
    return runs[0]


def register(name: str, run_id: str, artifact: str, description: str) -> str:
    """Register the run's model folder as a new version of `name` with alias @champion; its version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    version = client.create_model_version(name, source=f"runs:/{run_id}/{artifact}", run_id=run_id,
                                          description=description)
    client.set_registered_model_alias(name, "champion", version.version)
    return str(version.version)


@dataclass
class ComparisonReport:
    """What evaluating a fine-tuning run found and did."""

    finetune_run_id: str
    output: str  # where the fine-tuning job saved the models
    run_id: str
    tables: dict[str, pd.DataFrame]
    questions: dict[str, int]
    verdicts: dict[str, tuple[bool, str]]
    registered: dict[str, str] = field(default_factory=dict)  # system -> registered version
    skipped: dict[str, str] = field(default_factory=dict)  # system -> why a better model was not registered


def configured_reranking(settings: Settings, queries: list[str], rankings: list[list[str]],
                         text_of: dict[str, str]) -> list[list[str]] | None:
    """The rankings reordered as retrieval.reranker does now; None when it is `none`."""
    retrieval = settings.retrieval
    if retrieval.reranker == "rescore":
        return rescored(settings.models.rerank, queries, rankings, text_of, retrieval.rerank_candidates)
    if retrieval.reranker == "cross-encoder":
        return cross_encoder_reranked(str(model_path(retrieval.cross_encoder)), queries, rankings, text_of,
                                      retrieval.rerank_candidates)
    return None


def compare_systems(questions: dict[str, pd.DataFrame], sections: pd.DataFrame, tuned: str | None,
                    reranker: str | None, settings: Settings) -> dict[str, pd.DataFrame]:
    """Comparison table per question set (columns question_id, question, section_id) over the
    sections (section_id, text): the base model and the configured reranker, and the fine-tuned
    model and the trained reranker where given. The trained reranker is compared with the
    configured one when there is one, everything else with the base."""
    ids, texts = sections["section_id"].tolist(), sections["text"].tolist()
    text_of = dict(zip(ids, texts))
    depth = max(cutoff for _, cutoff in METRIC_CUTOFFS.values())
    candidates = settings.retrieval.rerank_candidates
    # every set's questions at once: each model encodes the sections a single time
    queries = [q for frame in questions.values() for q in frame["question"]]
    log.info("ranking %d sections for %d questions", len(ids), len(queries))
    base_rankings = dense_rankings(settings.models.embedding, queries, ids, texts, max(depth, candidates))
    rankings = {BASE: base_rankings}
    if tuned:
        rankings[TUNED] = dense_rankings(tuned, queries, ids, texts, depth)
    configured = configured_reranking(settings, queries, base_rankings, text_of)
    if configured is not None:
        rankings[CONFIGURED] = configured
    if reranker:
        rankings[RERANKED] = cross_encoder_reranked(reranker, queries, base_rankings, text_of, candidates)
    versus = {RERANKED: CONFIGURED} if configured is not None else {}
    tables, start = {}, 0
    for name, frame in questions.items():
        end = start + len(frame)
        scores = {system: per_question(frame, ranked[start:end]) for system, ranked in rankings.items()}
        tables[name] = comparison_table(scores, settings.evaluation, versus)
        start = end
    return tables


def evaluate_finetuned(spark: SparkSession, lakehouse: Lakehouse, settings: Settings, index_folder: Path,
                       experiment_id: str, registered_names: dict[str, str], run_id: str | None = None) -> ComparisonReport:
    """Compare a fine-tuning run's models with the base on both question sets, log the comparison to
    MLflow and register each model that the rule calls better under registered_names[system]."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from lakerag.evaluation.jobs import EVAL_SETS, NoQuestions, load_questions

    trained = finetune_run(experiment_id, run_id)
    if trained.data.params.get("base_embedding", settings.models.embedding) != settings.models.embedding:
        log.warning("run %s fine-tuned %s; it is compared with models.embedding=%s, the model in use now",
                    trained.info.run_id, trained.data.params["base_embedding"], settings.models.embedding)
    questions = {name: load_questions(spark, lakehouse, name, settings.evaluation.max_questions) for name in EVAL_SETS}
    questions = {name: frame for name, frame in questions.items() if not frame.empty}
    if HELD_OUT not in questions:
        raise NoQuestions("the generated test split is empty: the held-out questions decide promotion; run "
                          "`lakerag generate-eval-set`")
    counts = {name: len(frame) for name, frame in questions.items()}
    sections = pd.read_parquet(Path(index_folder) / "sections.parquet", columns=["section_id", "text"])
    with tempfile.TemporaryDirectory(prefix="lakerag-finetuned-") as scratch:
        try:
            folders = {system: mlflow.artifacts.download_artifacts(run_id=trained.info.run_id, artifact_path=artifact,
                                                                   dst_path=scratch)
                       for system, artifact in ARTIFACT.items()}
        except MlflowException as err:
            raise NoFinetuneRun(f"run {trained.info.run_id} lacks its model artifacts: {err.message}") from None
        tables = compare_systems(questions, sections, folders[TUNED], folders[RERANKED], settings)
    verdicts = {system: verdict(tables, system, counts, settings.finetune.min_held_out) for system in ARTIFACT}
    report = ComparisonReport(trained.info.run_id, trained.data.params.get("output", ""), "", tables, counts, verdicts)
    with mlflow.start_run(run_name="evaluate-finetuned") as run:
        report.run_id = run.info.run_id
        mlflow.set_tags({TAG_KIND: "finetune-evaluation", "lakerag.finetune_run": trained.info.run_id,
                         **{f"lakerag.verdict.{ARTIFACT[s]}": why for s, (_, why) in verdicts.items()}})
        mlflow.log_params({"base_embedding": settings.models.embedding, "index": str(index_folder),
                           **{f"questions_{name}": count for name, count in counts.items()}})
        for name, table in tables.items():
            mlflow.log_table(table, f"comparison_{name}.json")
            for r in table.itertuples(index=False):
                key = f"{name}.{r.system.replace(' ', '_').replace('+', 'with')}.{r.metric.replace('@', '_at_')}"
                values = {"mean": r.mean, "ci_low": r.ci_low, "ci_high": r.ci_high, "delta": r.delta,
                          "delta_ci_low": r.delta_low, "delta_ci_high": r.delta_high}
                mlflow.log_metrics({f"{key}_{v}": x for v, x in values.items() if not np.isnan(x)})
        for system, (better, why) in verdicts.items():
            if not better:
                continue
            if mlflow.get_registry_uri().startswith("databricks-uc"):
                # Unity Catalog registers only MLflow models with a signature; these are plain folders
                report.skipped[system] = ("not registered: Unity Catalog needs an MLflow model with a signature, "
                                          f"and this is a folder (artifact {ARTIFACT[system]} of run {trained.info.run_id})")
                mlflow.set_tag(f"lakerag.registered.{ARTIFACT[system]}", report.skipped[system])
                continue
            report.registered[system] = register(registered_names[system], trained.info.run_id, ARTIFACT[system],
                                                 f"{system} from fine-tuning run {trained.info.run_id}; {why}")
            mlflow.set_tag(f"lakerag.registered.{ARTIFACT[system]}",
                           f"{registered_names[system]} version {report.registered[system]}")
    return report
