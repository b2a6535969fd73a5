"""Fine-tuning on the generated train split: the embedding model (in-batch + mined hard negatives)
and a cross-encoder reranker, both saved, loadable, selectable and logged to MLflow."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import mlflow
import numpy as np
import pytest

from lakerag.ingest.bronze import ingest_bronze
from lakerag.finetune.train import NotEnoughPairs, run_finetune
from lakerag.finetune.gate import BASE, CONFIGURED, RERANKED, TUNED, evaluate_finetuned
from lakerag.enrich.embeddings import run_gold
from lakerag.enrich.index_build import build_index
from lakerag.weights import load_sentence_model
from lakerag.retrieval.retriever import Retriever
from lakerag.settings import RetrievalSettings, Settings
from lakerag.ingest.silver import run_silver
from lakerag.lakehouse.tables import EVAL_QUESTIONS, SILVER_SECTIONS
from tests.conftest import put

pytestmark = pytest.mark.slow
RUN = datetime(2026, 11, 26, tzinfo=timezone.utc)


def question_rows(sections, split: str) -> list[dict]:
    """One active question per section, asking for its title (as a generated pair would)."""
    return [{"question_id": f"{split}-{s.section_id}", "section_id": s.section_id, "doc_id": s.doc_id,
             "question": f"Where does the manual explain {s.title.lower()}?", "reference_answer": s.text[:80],
             "style": "factual", "generator": "openai:test-model", "prompt_version": "v1", "seed": 0,
             "split": split, "status": "active", "reason": None, "created_at": RUN} for s in sections]


def test_finetune_trains_both_models_on_the_train_split_only(spark, lakehouse, landing, tmp_path, mlflow_store):
    put(landing, "R-data.pdf", "R-data.pdf")
    settings = Settings()
    ingest_bronze(spark, lakehouse, str(landing), settings.bronze)
    run_silver(spark, lakehouse, settings, "sail")
    run_gold(spark, lakehouse, settings)
    index = build_index(spark, lakehouse, settings, tmp_path / "indexes").folder
    sections = [s for s in spark.table(lakehouse.table(SILVER_SECTIONS.name)).orderBy("ordinal").collect()
                if s.level >= 1 and len(s.text) > 200]
    train, test = sections[:24], sections[24:28]
    spark.createDataFrame(question_rows(train, "train") + question_rows(test, "test"),
                          EVAL_QUESTIONS.schema).write.insertInto(lakehouse.table(EVAL_QUESTIONS.name))

    report = run_finetune(spark, lakehouse, settings, index, tmp_path / "finetuned")
    assert report.pairs == len(train) and report.triplets == len(train)  # the test split is never used
    assert report.metrics["embedding_train_loss"] > 0 and report.metrics["reranker_train_loss"] > 0

    # the fine-tuned embedding model loads from its folder and differs from the base
    text = ["How do I read a spreadsheet into R?"]
    tuned = load_sentence_model(str(report.embedding_folder)).encode(text, normalize_embeddings=True)
    base = load_sentence_model(settings.models.embedding).encode(text, normalize_embeddings=True)
    assert tuned.shape == base.shape and not np.allclose(tuned, base, atol=1e-4)
    # the trained reranker is selectable as the retriever's cross-encoder
    reranking = dataclasses.replace(settings, retrieval=RetrievalSettings(
        reranker="cross-encoder", cross_encoder=str(report.reranker_folder)))
    hits = Retriever.from_settings(index, reranking).search(text[0], k=3)
    assert len(hits) == 3 and all(np.isfinite(h.score) for h in hits)

    run = mlflow.get_run(report.run_id)
    assert run.data.params["pairs"] == str(len(train)) and "reranker_train_seconds" in run.data.metrics
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(report.run_id)}
    assert logged == {"embedding_model", "reranker_model"}

    # the evaluation step compares the run's models with the base on the held-out (test) split
    experiment = mlflow.get_experiment_by_name("lakerag-test").experiment_id
    names = {TUNED: "lakerag_embedding", RERANKED: "lakerag_reranker"}
    comparison = evaluate_finetuned(spark, lakehouse, settings, index, experiment, names)
    assert comparison.finetune_run_id == report.run_id and comparison.questions == {"generated": len(test)}
    table = comparison.tables["generated"]
    assert set(zip(table["system"], table["metric"])) == {(s, m) for s in (BASE, TUNED, CONFIGURED, RERANKED)
                                                          for m in ("recall@5", "ndcg@10")}
    assert table["mean"].between(0, 1).all() and table["delta"].notna().sum() == 6
    # the trained reranker has to beat the configured one (rescore), not just no reranking
    assert set(table.loc[table["system"] == RERANKED, "versus"]) == {CONFIGURED}
    # 4 held-out questions are too few to promote anything (finetune.min_held_out 20)
    too_few = (False, f"cannot tell: {len(test)} held-out questions, fewer than finetune.min_held_out=20")
    assert comparison.verdicts == {TUNED: too_few, RERANKED: too_few} and comparison.registered == {}
    assert mlflow.MlflowClient().search_registered_models() == []
    logged = mlflow.get_run(comparison.run_id)
    assert logged.data.tags["lakerag.finetune_run"] == report.run_id
    assert "generated.fine-tuned_embedding.ndcg_at_10_mean" in logged.data.metrics

    fussy = dataclasses.replace(settings, finetune=dataclasses.replace(settings.finetune, min_pairs=100))
    with pytest.raises(NotEnoughPairs, match="24 active train-split question pairs"):
        run_finetune(spark, lakehouse, fussy, index, tmp_path / "again")
