"""Domain adaptation: fine-tune the embedding model, and train a cross-encoder reranker, on the
generated (question, section) pairs of the eval set's training split (never its test split).

Embeddings: sentence-transformers' MultipleNegativesRankingLoss (in-batch negatives) on
(question, section, hard negative) triplets; the hard negatives are mined with
`sentence_transformers.util.mine_hard_negatives` from the sections of the current index, scored
by the current embedding model. Reranker: the packaged MiniLM with a fresh one-logit head
(`CrossEncoder(path, num_labels=1)`) trained with binary cross-entropy on the positives and the
same negatives. Both are saved to folders (selectable in conf/: `models.embedding` or
`gold.extra_models`; `retrieval.reranker: cross-encoder` with `retrieval.cross_encoder`) and logged
to MLflow with their training metrics.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyspark.sql.functions as F
from pyspark.sql import SparkSession

from lakerag.lakehouse.engine import Lakehouse
from lakerag.weights import model_path
from lakerag.settings import FinetuneSettings, Settings
from lakerag.lakehouse.tables import EVAL_QUESTIONS, SILVER_SECTIONS

log = logging.getLogger(__name__)
TAG_KIND = "lakerag.kind"  # finetune runs are found by this tag


class NotEnoughPairs(RuntimeError):
    """The training split is too small to train on."""


def training_pairs(spark: SparkSession, lakehouse: Lakehouse) -> pd.DataFrame:
    """Active generated questions of the train split with their section's text:
    question, section_id, positive."""
    questions = (spark.table(lakehouse.table(EVAL_QUESTIONS.name))
                 .filter((F.col("status") == "active") & (F.col("split") == "train")))
    sections = spark.table(lakehouse.table(SILVER_SECTIONS.name)).select("section_id", F.col("text").alias("positive"))
    return (questions.join(sections, "section_id").filter(F.length(F.trim("positive")) > 0)
            .select("question", "section_id", "positive").orderBy("question").toPandas())


def mine_triplets(pairs: pd.DataFrame, corpus: list[str], model: str, negatives: int):
    """(question, positive) pairs -> a Dataset of (anchor, positive, negative) rows, negatives
    being the sections `model` ranks highest for the question that are not its own."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    from lakerag.weights import load_sentence_model

    pairs_ds = Dataset.from_dict({"anchor": pairs["question"].tolist(), "positive": pairs["positive"].tolist()})
    return mine_hard_negatives(pairs_ds, load_sentence_model(model), corpus=corpus, num_negatives=negatives,
                               sampling_strategy="top", output_format="triplet", verbose=False)


def _arguments(cls, config: FinetuneSettings, learning_rate: float):
    """Training arguments shared by both trainers: CPU, no checkpoints, no reporting."""
    return cls(output_dir=tempfile.mkdtemp(prefix="lakerag-finetune-"), num_train_epochs=config.epochs,
               per_device_train_batch_size=config.batch_size, learning_rate=learning_rate,
               warmup_steps=0.1, save_strategy="no", report_to="none", use_cpu=True, seed=config.seed,
               logging_steps=10, disable_tqdm=True)


def train_embedding(triplets, base: str, folder: Path, config: FinetuneSettings) -> dict[str, float]:
    """Fine-tune `base` on the triplets with in-batch + hard negatives; saves the model to `folder`."""
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )

    model = SentenceTransformer(str(model_path(base)), device="cpu")
    args = _arguments(SentenceTransformerTrainingArguments, config, config.learning_rate)
    args.batch_sampler = BatchSamplers.NO_DUPLICATES  # a duplicate in a batch would be a false negative
    started = time.perf_counter()
    result = SentenceTransformerTrainer(model=model, args=args, train_dataset=triplets,
                                        loss=MultipleNegativesRankingLoss(model)).train()
    model.save(str(folder))
    return {"embedding_train_loss": float(result.training_loss),
            "embedding_train_seconds": round(time.perf_counter() - started, 1)}


def train_reranker(triplets, base: str, folder: Path, config: FinetuneSettings) -> dict[str, float]:
    """Train a cross-encoder from `base` with a fresh one-logit head: (question, positive) -> 1,
    (question, negative) -> 0. Saves it to `folder`."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from sentence_transformers.cross_encoder.training_args import CrossEncoderTrainingArguments

    labelled = Dataset.from_dict({
        "query": list(triplets["anchor"]) * 2,
        "passage": list(triplets["positive"]) + list(triplets["negative"]),
        "label": [1.0] * len(triplets) + [0.0] * len(triplets),
    }).shuffle(seed=config.seed)
    model = CrossEncoder(str(model_path(base)), num_labels=1, max_length=config.reranker_max_length, device="cpu")
    started = time.perf_counter()
    result = CrossEncoderTrainer(model=model, args=_arguments(CrossEncoderTrainingArguments, config, config.reranker_learning_rate),
                                 train_dataset=labelled, loss=BinaryCrossEntropyLoss(model)).train()
    model.save(str(folder))
    return {"reranker_train_loss": float(result.training_loss),
            "reranker_train_seconds": round(time.perf_counter() - started, 1)}


@dataclass
class FinetuneReport:
    """What a fine-tuning run produced."""

    pairs: int
    triplets: int
    embedding_folder: Path
    reranker_folder: Path
    metrics: dict[str, float]
    run_id: str


def run_finetune(spark: SparkSession, lakehouse: Lakehouse, settings: Settings, index_folder: Path,
                 out_root: Path) -> FinetuneReport:
    """Train both models from the train split, save them under `out_root`, log the run to MLflow."""
    import mlflow

    config = settings.finetune
    pairs = training_pairs(spark, lakehouse)
    if len(pairs) < config.min_pairs:
        raise NotEnoughPairs(f"{len(pairs)} active train-split question pairs, fewer than finetune.min_pairs="
                             f"{config.min_pairs}: generate more with `lakerag generate-eval-set`")
    corpus = pd.read_parquet(Path(index_folder) / "sections.parquet")["text"].tolist()
    log.info("mining %d hard negative(s) each for %d pairs among %d indexed sections", config.hard_negatives,
             len(pairs), len(corpus))
    triplets = mine_triplets(pairs, corpus, settings.models.embedding, config.hard_negatives)
    embedding, reranker = Path(out_root) / "embedding", Path(out_root) / "reranker"
    with mlflow.start_run(run_name="finetune", tags={TAG_KIND: "finetune"}) as run:
        mlflow.log_params({"base_embedding": settings.models.embedding, "base_reranker": config.reranker_base,
                           "pairs": len(pairs), "triplets": len(triplets), "epochs": config.epochs,
                           "batch_size": config.batch_size, "learning_rate": config.learning_rate,
                           "hard_negatives": config.hard_negatives, "reranker_max_length": config.reranker_max_length,
                           "index": str(index_folder), "output": str(out_root)})
        metrics = train_embedding(triplets, settings.models.embedding, embedding, config)
        metrics |= train_reranker(triplets, config.reranker_base, reranker, config)
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(embedding), "embedding_model")
        mlflow.log_artifacts(str(reranker), "reranker_model")
    return FinetuneReport(len(pairs), len(triplets), embedding, reranker, metrics, run.info.run_id)
