"""The Spark job that builds a retrieval index folder from gold (format: `lakerag.retrieval.index_files`)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession

from lakerag.enrich.embeddings import indexed_text, summary_items
from lakerag.lakehouse.engine import Lakehouse
from lakerag.lakehouse.tables import (
    GOLD_EMBEDDINGS,
    SILVER_CHUNKS,
    SILVER_DOCUMENTS,
    SILVER_SECTION_LINKS,
    SILVER_SECTIONS,
    QUESTION,
    SUMMARY,
)
from lakerag.retrieval.index_files import INDEX_FORMAT, MANIFEST, index_name, write_index
from lakerag.settings import Settings

log = logging.getLogger(__name__)


def table_version(spark: SparkSession, lakehouse: Lakehouse, name: str) -> int:
    """Current Delta version of a table (delta-rs locally, DESCRIBE HISTORY on Databricks)."""
    location = lakehouse.location(name)
    if location is not None:
        from deltalake import DeltaTable

        return DeltaTable(location).version()
    return int(spark.sql(f"DESCRIBE HISTORY {lakehouse.table(name)} LIMIT 1").first()["version"])


def summary_rows(spark: SparkSession, lakehouse: Lakehouse, settings: Settings, vectors_of: DataFrame,
                 chunk_rows: DataFrame) -> DataFrame:
    """Summary and question vectors as index rows shaped like chunk rows: the text gold embedded,
    the section's pages and heading path, the tags of its document's chunks (chunk_index -1)."""
    summaries = summary_items(spark, lakehouse, settings).select(F.col("item_id").alias("chunk_id"), "text")
    sections = spark.table(lakehouse.table(SILVER_SECTIONS.name)).select(
        "section_id", "doc_id", "page_start", "page_end", "heading_path")
    tags = chunk_rows.groupBy("doc_id").agg(F.first("tags").alias("tags"))
    return (vectors_of.filter(F.col("kind").isin(SUMMARY, QUESTION)).drop("strategy")
            .join(summaries, "chunk_id")
            .join(sections, "section_id")
            .join(tags, "doc_id")
            .select("chunk_id", "kind", "vector", "groups", "doc_id", "section_id", F.lit(-1).alias("chunk_index"),
                    "text", F.lit(0).alias("token_count"), "page_start", "page_end", "heading_path", "tags"))


@dataclass
class IndexReport:
    folder: Path
    built: bool
    vectors: int


def link_landings(sections: pd.DataFrame, indexed: set[str]) -> dict[str, str]:
    """Heading-only sections (no chunk: "Chapter 7" right before "7.1") -> the first indexed
    section inside them, where a link to them lands; a reader following the link reads on there."""
    landings: dict[str, str] = {}
    for _, doc in sections.sort_values(["doc_id", "ordinal"]).groupby("doc_id"):
        rows = [(section_id, list(path)) for section_id, path in zip(doc["section_id"], doc["heading_path"])]
        for position, (section_id, path) in enumerate(rows):
            if section_id in indexed or not path:
                continue
            for later, later_path in rows[position + 1:]:
                if later_path[:len(path)] != path:  # left the section: it holds no indexed text
                    break
                if later in indexed:
                    landings[section_id] = later
                    break
    return landings


def build_index(spark: SparkSession, lakehouse: Lakehouse, settings: Settings, root: Path) -> IndexReport:
    """Build the index of the configured strategy's chunks from gold, once per gold version."""
    model, strategy = settings.models.embedding, settings.retrieval.strategy
    gold_version = table_version(spark, lakehouse, GOLD_EMBEDDINGS.name)
    folder = Path(root) / index_name(model, strategy) / f"v{gold_version}"
    if (folder / MANIFEST).is_file():
        built = json.loads((folder / MANIFEST).read_text())
        stemmer = settings.retrieval.bm25_stemmer
        if built.get("format") == INDEX_FORMAT and built.get("bm25_stemmer", "") == stemmer:
            log.info("index for gold version %d already built: %s", gold_version, folder)
            return IndexReport(folder, False, built["vectors"])
        log.info("index at %s has format %s and BM25 stemmer %r, rebuilding it in format %d with %r", folder,
                 built.get("format"), built.get("bm25_stemmer", ""), INDEX_FORMAT, stemmer)
    gold = spark.table(lakehouse.table(GOLD_EMBEDDINGS.name))
    documents = spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).select("doc_id", "title", "file_name")
    vectors_of = gold.filter(F.col("model_name") == model).select(F.col("item_id").alias("chunk_id"), "kind",
                                                                    "strategy", "section_id", "vector", "groups")
    silver_chunks = spark.table(lakehouse.table(SILVER_CHUNKS.name)).drop("strategy", "chunker_fingerprint",
                                                                          "chunk_kind", "bbox")
    chunk_rows = (vectors_of.filter(F.col("strategy") == strategy).drop("strategy", "section_id")
                  .join(silver_chunks, "chunk_id"))
    # BM25 indexes what gold embedded: the chunk with its title and heading path, a summary or a
    # question as is.
    chunks = (chunk_rows.unionByName(summary_rows(spark, lakehouse, settings, vectors_of, chunk_rows))
              .join(documents, "doc_id")
              .withColumn("indexed_text", F.when(F.col("kind").isin(SUMMARY, QUESTION), F.col("text"))
                          .otherwise(indexed_text(settings.gold.contextual_text)))
              .orderBy("chunk_id")
              .toPandas())
    if chunks.empty:
        raise ValueError(f"gold has no {model} vectors for strategy {strategy!r}: run `lakerag embed-gold` first")
    vectors = np.stack(chunks.pop("vector").map(lambda v: np.asarray(v, dtype=np.float32)).tolist())
    rerank = None
    if settings.retrieval.reranker == "rescore":
        stored = (gold.filter(F.col("model_name") == settings.models.rerank)
                  .select(F.col("item_id").alias("chunk_id"), "vector").toPandas())
        if len(stored) and set(chunks["chunk_id"]) <= set(stored["chunk_id"]):
            by_id = dict(zip(stored["chunk_id"], stored["vector"]))
            rerank = np.stack([np.asarray(by_id[c], dtype=np.float32) for c in chunks["chunk_id"]])
    sections = (spark.table(lakehouse.table(SILVER_SECTIONS.name))
                .filter(F.col("doc_id").isin(*chunks["doc_id"].unique().tolist()))
                .select("section_id", "doc_id", "heading_path", "title", "page_start", "page_end", "text",
                        "paragraph_pages", "ordinal")
                .toPandas())
    indexed = set(chunks["section_id"])
    links = (spark.table(lakehouse.table(SILVER_SECTION_LINKS.name))
             .filter(F.col("to_section_id").isNotNull() & F.col("doc_id").isin(*chunks["doc_id"].unique().tolist()))
             .select("from_section_id", "to_section_id", "kind", "text", "page")
             .orderBy("from_section_id", "page", "kind", "text", "to_section_id").toPandas())
    links["to_section_id"] = links["to_section_id"].replace(link_landings(sections, indexed))
    links = links[links["from_section_id"].isin(indexed) & links["to_section_id"].isin(indexed)
                  & (links["from_section_id"] != links["to_section_id"])].drop_duplicates(
        ["from_section_id", "to_section_id", "kind", "text"])
    sections = sections.drop(columns="ordinal")
    chunks["tags"] = chunks["tags"].map(lambda tags: json.dumps(dict(tags or {}), sort_keys=True))
    # An unlabelled vector (its document not yet labelled) is readable by no one.
    chunks["groups"] = chunks["groups"].map(lambda groups: [] if groups is None else [str(g) for g in groups])
    manifest = {
        "format": INDEX_FORMAT, "catalog": lakehouse.catalog, "schema": lakehouse.schema,
        "gold_table": lakehouse.table(GOLD_EMBEDDINGS.name), "gold_version": gold_version,
        "model": model, "strategy": strategy, "vectors": len(chunks), "dimension": int(vectors.shape[1]),
        "links": len(links),
        "dense": "flat" if len(chunks) < settings.retrieval.exact_below else "hnsw",
        "rerank_model": settings.models.rerank if rerank is not None else None,
        "bm25_stemmer": settings.retrieval.bm25_stemmer,
        "built_at": datetime.now(timezone.utc).isoformat(),
    }
    log.info("building index of %d vectors at %s", len(chunks), folder)
    write_index(folder, chunks, vectors, sections, manifest, settings.retrieval.exact_below, rerank, links)
    return IndexReport(folder, True, len(chunks))
