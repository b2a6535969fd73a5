"""Databricks Vector Search: a Delta Sync index over the gold vectors (Databricks only).

A Delta Sync index reads one table whose rows all have vectors of one dimension, keyed by one
column, with change data feed on. gold_embeddings holds several models side by side, so the
index reads `gold_vs_<model>__<strategy>`: that model's vectors of that strategy with the
columns a filter or citation needs, kept in line with gold by MERGE.
"""
from __future__ import annotations

import logging
from typing import Any

import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession

from lakerag.lakehouse.engine import Lakehouse
from lakerag.retrieval.index_files import vector_search_names
from lakerag.settings import Settings
from lakerag.lakehouse.tables import GOLD_EMBEDDINGS, SILVER_CHUNKS, SILVER_DOCUMENTS

log = logging.getLogger(__name__)
SOURCE_COLUMNS = "chunk_id string, doc_id string, section_id string, title string, file_name string, " \
                 "heading_path string, page_start int, page_end int, text string, vector array<float>"


def vector_search_source(gold: DataFrame, chunks: DataFrame, documents: DataFrame, model: str,
                         strategy: str) -> DataFrame:
    """One model's vectors of one strategy with citation and filter columns (the heading path
    as 'A > B', since Vector Search filters on scalar columns; the groups that may read each)."""
    return (gold.filter((F.col("model_name") == model) & (F.col("strategy") == strategy))
            .select(F.col("item_id").alias("chunk_id"), "vector")
            .join(chunks.select("chunk_id", "doc_id", "section_id", "heading_path", "page_start", "page_end", "text"),
                  "chunk_id")
            .join(documents.select("doc_id", "title", "file_name", "groups"), "doc_id")
            .select("chunk_id", "doc_id", "section_id", "title", "file_name",
                    F.array_join("heading_path", " > ").alias("heading_path"), "page_start", "page_end", "text",
                    "vector", "groups"))


def ensure_delta_sync_index(client: Any, endpoint: str, index: str, source_table: str, dimension: int) -> str:
    """Create the Delta Sync index (self-managed vectors, triggered sync) if missing, else sync
    it; returns 'created' or 'synced'."""
    existing = {entry.get("name") for entry in client.list_indexes(endpoint).get("vector_indexes", [])}
    if index not in existing:
        client.create_delta_sync_index(
            endpoint_name=endpoint, index_name=index, primary_key="chunk_id", source_table_name=source_table,
            pipeline_type="TRIGGERED", embedding_dimension=dimension, embedding_vector_column="vector",
        )
        return "created"
    client.get_index(endpoint_name=endpoint, index_name=index).sync()
    return "synced"


def sync_vector_search(spark: SparkSession, lakehouse: Lakehouse, settings: Settings, endpoint: str,
                       client: Any = None) -> str:
    """Refresh the source table from gold and create or sync its Vector Search index."""
    model, strategy = settings.models.embedding, settings.retrieval.strategy
    source_name, index_name_ = vector_search_names(model, strategy)
    source_table, index = lakehouse.table(source_name), lakehouse.table(index_name_)
    source = vector_search_source(
        spark.table(lakehouse.table(GOLD_EMBEDDINGS.name)), spark.table(lakehouse.table(SILVER_CHUNKS.name)),
        spark.table(lakehouse.table(SILVER_DOCUMENTS.name)), model, strategy)
    # Change data feed is what Delta Sync reads; Sail cannot set it, so this runs on Databricks.
    spark.sql(f"CREATE TABLE IF NOT EXISTS {source_table} ({SOURCE_COLUMNS}) USING delta "
              "TBLPROPERTIES (delta.enableChangeDataFeed = true)")
    if "groups" not in spark.table(source_table).columns:  # made before documents had permissions
        spark.sql(f"ALTER TABLE {source_table} ADD COLUMNS (groups array<string>)")
    source.createOrReplaceTempView("lakerag_vs_source")
    spark.sql(f"MERGE INTO {source_table} t USING lakerag_vs_source s ON t.chunk_id = s.chunk_id "
              "WHEN MATCHED AND NOT (t.groups <=> s.groups) THEN UPDATE SET t.groups = s.groups "
              "WHEN NOT MATCHED THEN INSERT * WHEN NOT MATCHED BY SOURCE THEN DELETE")
    dimension = len(source.select("vector").first()["vector"])
    if client is None:
        from databricks.vector_search.client import VectorSearchClient

        client = VectorSearchClient(disable_notice=True)
    outcome = ensure_delta_sync_index(client, endpoint, index, source_table, dimension)
    log.info("vector search index %s on %s: %s", index, endpoint, outcome)
    return outcome
