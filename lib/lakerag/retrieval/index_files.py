"""The retrieval index folder format, written and read without Spark: FAISS (dense), bm25s
(sparse), hit metadata. `lakerag.enrich.index_build` fills it from gold.

An index is a folder `<index root>/<model>__<strategy>/v<gold version>/` holding:
`dense.faiss`, `bm25/` (bm25s), `chunks.parquet` (one row per vector: ids, kind chunk or
summary, text, indexed_text (what was embedded and BM25-indexed), citation fields, tags, the
groups allowed to read its document), `sections.parquet` (full section text and the page of each paragraph, for parent expansion),
`links.parquet` (the resolved silver_section_links between indexed sections: from, to, kind, text,
page, each section's in page order, for graph retrieval), optionally
`rerank.npy` (stored vectors of the reranking model, aligned with chunks), and `manifest.json`
recording the gold table version it came from and the BM25 stemmer (`bm25_stemmer`, which the
retriever then applies to queries). Built once per gold version: re-running the
build over an unchanged gold table does nothing.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from pathlib import Path

import bm25s
import Stemmer
import faiss
import numpy as np
import pandas as pd

from lakerag.settings import Settings

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every build step at DEBUG
# 2: summary rows (kind column); 3: the page of each section paragraph; 4: indexed_text; 5: groups;
# 6: links.parquet
INDEX_FORMAT = 6
MANIFEST = "manifest.json"
LINKS = "links.parquet"
_per_thread = threading.local()


def _stemmer(language: str) -> Stemmer.Stemmer:
    """PyStemmer's Snowball stemmer for `language`, one per thread: an instance is not
    thread-safe, and the served chain searches on several threads (BM25 in its own)."""
    stemmers = _per_thread.__dict__.setdefault("stemmers", {})
    if language not in stemmers:
        if language not in Stemmer.algorithms():
            raise ValueError(f"retrieval.bm25_stemmer: {language!r} is not a Snowball stemmer; use \"\" (none) or "
                             f"one of {', '.join(Stemmer.algorithms())}")
        stemmers[language] = Stemmer.Stemmer(language)
    return stemmers[language]


def bm25_tokens(texts: list[str], stemmer: str = "") -> list[list[str]]:
    """Lower-cased word tokens without English stop words, Snowball-stemmed in `stemmer`'s
    language ("" = not stemmed); an index and its queries must use the same stemmer."""
    return bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(stemmer) if stemmer else None,
                          return_ids=False, show_progress=False)


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
    exact_below: int, rerank_vectors: np.ndarray | None = None, links: pd.DataFrame | None = None,
) -> Path:
    """Write one index folder atomically (built aside, then renamed into place)."""
    scratch = folder.with_name(folder.name + ".building")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    faiss.write_index(dense_index(vectors, exact_below), str(scratch / "dense.faiss"))
    sparse = bm25s.BM25()
    sparse.index(bm25_tokens(chunks["indexed_text"].tolist(), manifest.get("bm25_stemmer", "")), show_progress=False)
    sparse.save(str(scratch / "bm25"))
    chunks.to_parquet(scratch / "chunks.parquet", index=False)
    sections.to_parquet(scratch / "sections.parquet", index=False)
    if links is not None:
        links.to_parquet(scratch / LINKS, index=False)
    if rerank_vectors is not None:
        np.save(scratch / "rerank.npy", rerank_vectors)
    (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    scratch.rename(folder)
    return folder


def index_name(model: str, strategy: str) -> str:
    """Folder name for a model/strategy pair (a model path becomes a safe slug)."""
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', model).strip('_')}__{strategy}"


def vector_search_names(model: str, strategy: str) -> tuple[str, str]:
    """(source table, index) names, without catalog and schema, of the Vector Search index over
    one model's vectors of one strategy (Unity Catalog names: lower case, no dots or dashes)."""
    name = index_name(model, strategy).replace(".", "_").replace("-", "_").lower()
    return f"gold_vs_{name}", f"gold_vs_{name}_index"


def latest_index(root: Path, settings: Settings) -> Path:
    """The newest built index folder for the configured model and strategy."""
    base = Path(root) / index_name(settings.models.embedding, settings.retrieval.strategy)
    versions = sorted(base.glob("v*/" + MANIFEST), key=lambda m: int(m.parent.name[1:]))
    if not versions:
        raise FileNotFoundError(f"no index under {base}: run `lakerag build-index` first")
    return versions[-1].parent
