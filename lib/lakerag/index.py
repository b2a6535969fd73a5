"""Retrieval index artifacts built from gold: FAISS (dense), bm25s (sparse), hit metadata.

An index is a folder `<index root>/<model>__<strategy>/v<gold version>/` holding:
`dense.faiss`, `bm25/` (bm25s), `chunks.parquet` (one row per vector: ids, kind chunk or
summary, text, citation fields, tags), `sections.parquet` (full section text and the page of each paragraph, for parent expansion), optionally
`rerank.npy` (stored vectors of the reranking model, aligned with chunks), and `manifest.json`
recording the gold table version it came from. Built once per gold version: re-running the
build over an unchanged gold table does nothing.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import bm25s
import faiss
import numpy as np
import pandas as pd
import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession

from lakerag.engine import Lakehouse
from lakerag.settings import Settings
from lakerag.summaries import summary_text
from lakerag.tables import (
    GOLD_EMBEDDINGS,
    SILVER_CHUNKS,
    SILVER_DOCUMENTS,
    SILVER_SECTION_SUMMARIES,
    SILVER_SECTIONS,
    SUMMARY,
)

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every build step at DEBUG
INDEX_FORMAT = 3  # 2: summary rows (kind column); 3: the page of each section paragraph
MANIFEST = "manifest.json"


def bm25_tokens(texts: list[str]) -> list[list[str]]:
    """Lower-cased word tokens without English stop words (the same for corpus and queries)."""
    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


def dense_index(vectors: np.ndarray, exact_below: int) -> faiss.Index:
    """Exact inner-product search for up to `exact_below` vectors, HNSW above (unit vectors:
    inner product = cosine)."""
    dimension = vectors.shape[1]
    if len(vectors) < exact_below:
        index = faiss.IndexFlatIP(dimension)
    else:
        index = faiss.IndexHNSWFlat(dimension, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
    index.add(vectors)
    return index


def write_index(
    folder: Path, chunks: pd.DataFrame, vectors: np.ndarray, sections: pd.DataFrame, manifest: dict,
    exact_below: int, rerank_vectors: np.ndarray | None = None,
) -> Path:
    """Write one index folder atomically (built aside, then renamed into place)."""
    scratch = folder.with_name(folder.name + ".building")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    faiss.write_index(dense_index(vectors, exact_below), str(scratch / "dense.faiss"))
    sparse = bm25s.BM25()
    sparse.index(bm25_tokens(chunks["text"].tolist()), show_progress=False)
    sparse.save(str(scratch / "bm25"))
    chunks.to_parquet(scratch / "chunks.parquet", index=False)
    sections.to_parquet(scratch / "sections.parquet", index=False)
    if rerank_vectors is not None:
        np.save(scratch / "rerank.npy", rerank_vectors)
    (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    scratch.rename(folder)
    return folder


def index_name(model: str, strategy: str) -> str:
    """Folder name for a model/strategy pair (a model path becomes a safe slug)."""
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', model).strip('_')}__{strategy}"


def latest_index(root: Path, settings: Settings) -> Path:
    """The newest built index folder for the configured model and strategy."""
    base = Path(root) / index_name(settings.models.embedding, settings.retrieval.strategy)
    versions = sorted(base.glob("v*/" + MANIFEST), key=lambda m: int(m.parent.name[1:]))
    if not versions:
        raise FileNotFoundError(f"no index under {base}: run `lakerag build-index` first")
    return versions[-1].parent


def table_version(spark: SparkSession, lakehouse: Lakehouse, name: str) -> int:
    """Current Delta version of a table (delta-rs locally, DESCRIBE HISTORY on Databricks)."""
    location = lakehouse.location(name)
    if location is not None:
        from deltalake import DeltaTable

        return DeltaTable(location).version()
    return int(spark.sql(f"DESCRIBE HISTORY {lakehouse.table(name)} LIMIT 1").first()["version"])


def summary_rows(spark: SparkSession, lakehouse: Lakehouse, vectors_of: DataFrame, chunk_rows: DataFrame) -> DataFrame:
    """Summary vectors as index rows shaped like chunk rows: the summary text, the section's
    pages and heading path, the tags of its document's chunks (chunk_index -1)."""
    summaries = spark.table(lakehouse.table(SILVER_SECTION_SUMMARIES.name)).select(
        F.col("summary_id").alias("chunk_id"),
        summary_text().alias("text"))
    sections = spark.table(lakehouse.table(SILVER_SECTIONS.name)).select(
        "section_id", "doc_id", "page_start", "page_end", "heading_path")
    tags = chunk_rows.groupBy("doc_id").agg(F.first("tags").alias("tags"))
    return (vectors_of.filter(F.col("kind") == SUMMARY).drop("strategy")
            .join(summaries, "chunk_id")
            .join(sections, "section_id")
            .join(tags, "doc_id")
            .select("chunk_id", "kind", "vector", "doc_id", "section_id", F.lit(-1).alias("chunk_index"), "text",
                    F.lit(0).alias("token_count"), "page_start", "page_end", "heading_path", "tags"))


@dataclass
class IndexReport:
    folder: Path
    built: bool
    vectors: int


def build_index(spark: SparkSession, lakehouse: Lakehouse, settings: Settings, root: Path) -> IndexReport:
    """Build the index of the configured strategy's chunks from gold, once per gold version."""
    model, strategy = settings.models.embedding, settings.retrieval.strategy
    gold_version = table_version(spark, lakehouse, GOLD_EMBEDDINGS.name)
    folder = Path(root) / index_name(model, strategy) / f"v{gold_version}"
    if (folder / MANIFEST).is_file():
        built = json.loads((folder / MANIFEST).read_text())
        if built.get("format") == INDEX_FORMAT:
            log.info("index for gold version %d already built: %s", gold_version, folder)
            return IndexReport(folder, False, built["vectors"])
        log.info("index at %s has format %s, rebuilding it in format %d", folder, built.get("format"), INDEX_FORMAT)
    gold = spark.table(lakehouse.table(GOLD_EMBEDDINGS.name))
    documents = spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).select("doc_id", "title", "file_name")
    vectors_of = gold.filter(F.col("model_name") == model).select(F.col("item_id").alias("chunk_id"), "kind",
                                                                    "strategy", "section_id", "vector")
    chunk_rows = (vectors_of.filter(F.col("strategy") == strategy).drop("strategy", "section_id")
                  .join(spark.table(lakehouse.table(SILVER_CHUNKS.name)).drop("strategy", "chunker_fingerprint"),
                        "chunk_id"))
    chunks = (chunk_rows.unionByName(summary_rows(spark, lakehouse, vectors_of, chunk_rows))
              .join(documents, "doc_id")
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
                        "paragraph_pages")
                .toPandas())
    chunks["tags"] = chunks["tags"].map(lambda tags: json.dumps(dict(tags or {}), sort_keys=True))
    manifest = {
        "format": INDEX_FORMAT, "catalog": lakehouse.catalog, "schema": lakehouse.schema,
        "gold_table": lakehouse.table(GOLD_EMBEDDINGS.name), "gold_version": gold_version,
        "model": model, "strategy": strategy, "vectors": len(chunks), "dimension": int(vectors.shape[1]),
        "dense": "flat" if len(chunks) < settings.retrieval.exact_below else "hnsw",
        "rerank_model": settings.models.rerank if rerank is not None else None,
        "built_at": datetime.now(timezone.utc).isoformat(),
    }
    log.info("building index of %d vectors at %s", len(chunks), folder)
    write_index(folder, chunks, vectors, sections, manifest, settings.retrieval.exact_below, rerank)
    return IndexReport(folder, True, len(chunks))
