"""Gold: silver chunks and section summaries -> gold_embeddings, one L2-normalised vector per
(item, model); kind `chunk`, `summary` or `question` (each question a summary row holds).

Incremental: only chunks without a vector from the current model version are embedded;
vectors of chunks that left silver (their document was superseded or deleted, or a chunking
setting changed) or that an older version of the model produced are removed. Several models
live side by side: the model is part of the key.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator

import pandas as pd
import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame, SparkSession

from lakerag.lakehouse.engine import Lakehouse
from lakerag.weights import model_version
from lakerag.retrieval.encoders import torch_encode
from lakerag.settings import Settings
from lakerag.chain.llm import model_key
from lakerag.enrich.summaries import summary_text
from lakerag.lakehouse.tables import (
    GOLD_EMBEDDINGS,
    SILVER_CHUNKS,
    SILVER_DOCUMENTS,
    SILVER_SECTION_SUMMARIES,
    SILVER_SECTIONS,
    QUESTION,
    SUMMARY,
    merge_into,
    sync_column,
)

log = logging.getLogger(__name__)


def embed_items(items: DataFrame, model: str, version: str, batch_size: int, run_time: datetime) -> DataFrame:
    """Items (item_id, kind, doc_id, section_id, strategy, text) -> gold_embeddings rows (groups
    null: `run_gold` labels them)."""
    columns = [f.name for f in GOLD_EMBEDDINGS.schema.fields]

    def embed_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            vectors = torch_encode(model, batch["text"].tolist(), batch_size)
            yield batch.drop(columns=["text"]).assign(
                model_name=model, model_version=version, dimension=vectors.shape[1],
                vector=list(vectors), embedded_at=run_time, groups=None,
            )[columns]

    return items.mapInPandas(embed_batches, GOLD_EMBEDDINGS.schema)


def silver_document_groups(spark: SparkSession, lakehouse: Lakehouse) -> DataFrame:
    """doc_id -> groups allowed to read it, from silver_documents."""
    return (spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).filter(F.col("groups").isNotNull())
            .select("doc_id", "groups").dropDuplicates(["doc_id"]))


@dataclass
class GoldReport:
    """What one gold run did, per model."""

    embedded: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    relabelled: int = 0  # vectors whose document's groups changed (nothing re-embedded)

    @property
    def changed(self) -> bool:
        """True if the run wrote anything."""
        return any(self.embedded.values()) or any(self.removed.values()) or bool(self.relabelled)


def embedding_models(settings: Settings) -> list[str]:
    """Models to embed with: the retrieval model first, then the extra ones, no repeats."""
    return list(dict.fromkeys([settings.models.embedding, *settings.gold.extra_models]))


def summary_items(spark: SparkSession, lakehouse: Lakehouse, settings: Settings) -> DataFrame:
    """Items from the ok summaries of llm.* at summaries' version whose section is still in
    silver: with gold.summaries one of kind `summary` a row that has a summary (title, summary
    and questions in one text), with gold.questions one of kind `question` for each question
    (doc2query: a question a reader might ask, matched on its own)."""
    summaries = (spark.table(lakehouse.table(SILVER_SECTION_SUMMARIES.name))
                 .filter((F.col("status") == "ok") & (F.col("model") == model_key(settings))
                         & (F.col("prompt_version") == settings.summaries.version))
                 .join(spark.table(lakehouse.table(SILVER_SECTIONS.name)).select("section_id"), "section_id"))
    whole = (summaries.filter(F.col("summary").isNotNull())
             .select(F.col("summary_id").alias("item_id"), F.lit(SUMMARY).alias("kind"), "doc_id", "section_id",
                     F.lit(SUMMARY).alias("strategy"), summary_text().alias("text")))
    questions = (summaries.select("summary_id", "doc_id", "section_id", F.posexplode("questions").alias("n", "text"))
                 .select(F.concat_ws(":", "summary_id", F.lit(QUESTION), F.col("n").cast("string")).alias("item_id"),
                         F.lit(QUESTION).alias("kind"), "doc_id", "section_id", F.lit(QUESTION).alias("strategy"),
                         "text"))
    if settings.gold.summaries and settings.gold.questions:
        return whole.unionByName(questions)
    return whole if settings.gold.summaries else questions


def indexed_text(contextual: bool) -> Column:
    """What is embedded and BM25-indexed for a silver_chunks row: with `contextual`, "document
    title > heading > subheading" on a first line above the text (a manual's most telling words
    are often its headings), else the text. The title comes from the chunk's own tags, so no
    join reshuffles the chunks before embedding."""
    if not contextual:
        return F.col("text")
    title = F.coalesce(F.col("tags").getItem("doc_title"), F.lit(""))
    # array_distinct: outline-less documents start their heading path with the title.
    path = F.array_distinct(F.concat(F.array(title), F.col("heading_path")))
    return F.concat_ws("\n", F.array_join(F.filter(path, lambda part: part != ""), " > "), F.col("text"))


def vector_version(model: str, settings: Settings) -> str:
    """What a stored vector was made by: the weights, and the form of the text it embeds (a
    change of either re-embeds)."""
    return model_version(model) + ("+context" if settings.gold.contextual_text else "")


def gold_items(spark: SparkSession, lakehouse: Lakehouse, settings: Settings) -> DataFrame:
    """Everything gold should hold a vector of: chunks of gold.strategies, and summaries."""
    items = (spark.table(lakehouse.table(SILVER_CHUNKS.name))
             .filter(F.col("strategy").isin(*settings.gold.strategies))
             .select(F.col("chunk_id").alias("item_id"), F.lit("chunk").alias("kind"), "doc_id",
                     "section_id", "strategy", indexed_text(settings.gold.contextual_text).alias("text")))
    if settings.gold.summaries or settings.gold.questions:
        items = items.unionByName(summary_items(spark, lakehouse, settings))
    return items


def run_gold(
    spark: SparkSession, lakehouse: Lakehouse, settings: Settings, run_time: datetime | None = None
) -> GoldReport:
    """Bring gold_embeddings in line with the silver chunks and summaries it should embed."""
    run_time = run_time or datetime.now(timezone.utc)
    gold_table = lakehouse.table(GOLD_EMBEDDINGS.name)
    items = gold_items(spark, lakehouse, settings)
    report = GoldReport()
    for model in embedding_models(settings):
        version = vector_version(model, settings)
        have = spark.table(gold_table).filter(F.col("model_name") == model)
        current = have.filter(F.col("model_version") == version).select("item_id")
        stale = (have.select("item_id", "model_name", "model_version")
                 .join(items.select("item_id"), "item_id", "left_anti")
                 .unionByName(have.filter(F.col("model_version") != version)
                              .select("item_id", "model_name", "model_version")))
        stale_keys = [(r.item_id, r.model_name) for r in stale.select("item_id", "model_name").distinct().collect()]
        if stale_keys:
            log.info("%s: removing %d vectors of items no longer in silver or of an older model", model,
                     len(stale_keys))
            merge_into(spark, gold_table, spark.createDataFrame(stale_keys, "item_id string, model_name string"),
                       GOLD_EMBEDDINGS.key, matched="DELETE", insert=False)
        report.removed[model] = len(stale_keys)
        missing = items.join(current, "item_id", "left_anti")
        count = missing.count()
        if count:
            log.info("%s: embedding %d chunks and summaries", model, count)
            # Labelled after embedding: a join before it would reshuffle the items to embed.
            embedded = embed_items(missing, model, version, settings.gold.batch_size, run_time).drop("groups")
            (embedded.join(F.broadcast(silver_document_groups(spark, lakehouse)), "doc_id", "left")
             .select(*GOLD_EMBEDDINGS.schema.fieldNames()).write.insertInto(gold_table))
        report.embedded[model] = count
    # Documents whose groups changed since their vectors were written (access.rules changed).
    labels = spark.table(gold_table).select(*GOLD_EMBEDDINGS.key, "doc_id").join(
        silver_document_groups(spark, lakehouse), "doc_id")
    report.relabelled = sync_column(spark, gold_table, GOLD_EMBEDDINGS.key, labels.drop("doc_id"), "groups")
    return report
