"""Fusion, reranking and filters of the retriever on tiny index folders built by hand."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lakerag.retrieval.index_files import write_index
from lakerag.retrieval.retriever import Filters, Retriever, zscores
from lakerag.settings import RetrievalSettings
from lakerag.weights import load_sentence_model

MINILM, MPNET = "all-MiniLM-L6-v2", "all-mpnet-base-v2"


def tiny_index(folder: Path, texts: list[str], vectors: np.ndarray, doc_ids: list[str] | None = None,
               rerank: np.ndarray | None = None, groups: list[list[str]] | None = None,
               links: list[tuple[int, int, str, str]] = (), stemmer: str = "") -> Path:
    """An index folder of one chunk per text (section s<i>, document doc_ids[i], readable by
    groups[i], default users), with section links (from i, to j, kind, text), BM25 stemmed by `stemmer`."""
    n = len(texts)
    doc_ids = doc_ids or ["d1"] * n
    chunks = pd.DataFrame({
        "chunk_id": [f"c{i}" for i in range(n)], "kind": "chunk", "doc_id": doc_ids,
        "section_id": [f"s{i}" for i in range(n)], "chunk_index": 0, "text": texts, "indexed_text": texts,
        "token_count": 10, "page_start": 1, "page_end": 1, "heading_path": [[f"Section {i}"] for i in range(n)],
        "tags": json.dumps({}), "title": [f"Doc {d}" for d in doc_ids], "file_name": [f"{d}.pdf" for d in doc_ids],
        "groups": groups or [["users"]] * n})
    sections = chunks[["section_id", "doc_id", "heading_path", "title", "page_start", "page_end", "text"]].assign(
        paragraph_pages=[[1]] * n)
    edges = pd.DataFrame([(f"s{i}", f"s{j}", kind, text) for i, j, kind, text in links],
                         columns=["from_section_id", "to_section_id", "kind", "text"])
    manifest = {"format": 6, "model": MINILM, "strategy": "section", "vectors": n,
                "rerank_model": MPNET if rerank is not None else None, "bm25_stemmer": stemmer}
    return write_index(folder, chunks, vectors.astype(np.float32), sections, manifest, 1000, rerank, edges)


# Query vector e1. Dense: A (cosine 1.0) > B (0.8) > C (0.0); only C has the query's word.
TEXTS = ["apples and pears", "apples only", "the netcdf format"]
VECTORS = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 1.0, 0.0]])
QUERY = np.array([1.0, 0.0, 0.0], dtype=np.float32)


@pytest.fixture
def abc(tmp_path) -> Path:
    return tiny_index(tmp_path / "abc", TEXTS, VECTORS)


def fused_order(folder: Path, **settings) -> list[str]:
    """Texts in the order `fuse` puts them for the query e1 and the word "netcdf"."""
    retriever = Retriever(folder, RetrievalSettings(**settings))
    dense = retriever.dense_ranking(QUERY[None, :], 3, None)
    sparse = retriever.bm25_ranking("netcdf", 3, None)
    assert [row for row, _ in sparse] == [2]  # C alone has the word
    return [TEXTS[row] for row, _ in retriever.fuse(dense, sparse, QUERY, ["netcdf"])]


def test_zscores_are_distances_from_the_mean_in_standard_deviations():
    assert zscores(np.array([1.0, 2.0, 3.0])).round(4).tolist() == [-1.2247, 0.0, 1.2247]
    assert zscores(np.array([5.0, 5.0])).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(("bm25_weight", "expected"), [
    # z of the cosines: A 0.93, B 0.46, C -1.39; z of BM25: A, B -0.71, C 1.41.
    (0.3, ["apples and pears", "apples only", "the netcdf format"]),   # C last: weak BM25
    (1.0, ["apples and pears", "the netcdf format", "apples only"]),   # C passes B at w > 0.87
    (2.0, ["the netcdf format", "apples and pears", "apples only"]),   # and A at w > 1.09
])
def test_zscore_fusion_ranks_a_bm25_only_chunk_where_its_weight_says(abc, bm25_weight, expected):
    assert fused_order(abc, fusion="zscore", bm25_weight=bm25_weight) == expected


@pytest.mark.parametrize(("stemmer", "expected"), [("english", [1, 0]), ("", [])])
def test_a_stemmed_bm25_index_matches_other_forms_of_a_word(tmp_path, stemmer, expected):
    # "installing packages" shares no word with either text, but stems: "packag" with both
    # (c1 also "instal"), and the index's manifest tells the retriever to stem the query too.
    folder = tiny_index(tmp_path / stemmer, ["a package list", "install the package"], VECTORS[:2], stemmer=stemmer)
    assert [row for row, _ in Retriever(folder).bm25_ranking("installing packages", 2, None)] == expected


def test_weighted_rrf_follows_its_weights(abc):
    # Equal weights: C's 1/61 + 1/63 beats A's 1/61; weight 0: BM25 does not count.
    assert fused_order(abc, fusion="rrf", bm25_weight=1.0)[0] == "the netcdf format"
    assert fused_order(abc, fusion="rrf", bm25_weight=0.0) == TEXTS


def test_rescore_reranker_reorders_by_its_own_vectors_and_blends_the_first_stage(tmp_path):
    query = "which format stores arrays?"
    q = load_sentence_model(MPNET).encode([query], normalize_embeddings=True)[0]
    other = np.zeros_like(q)
    other[int(np.argmin(np.abs(q)))] = 1.0  # nearly orthogonal to the query
    other = other - (other @ q) * q
    other /= np.linalg.norm(other)
    # The reranker's cosines: A -1, B 0, C 1; the first stage puts A, B, C with scores 1, 0.9, 0.
    folder = tiny_index(tmp_path / "rr", TEXTS, VECTORS, rerank=np.stack([-q, other, q]))
    first = [(0, 1.0), (1, 0.9), (2, 0.0)]
    alone = Retriever(folder, RetrievalSettings(rerank_first_stage_weight=0.0), MPNET)
    assert [row for row, _ in alone.rerank(query, first)] == [2, 1, 0]
    # Blended: z(rerank) + z(first) = A -1.22+0.81, B 0+0.59, C 1.22-1.41 -> B, C, A.
    blended = Retriever(folder, RetrievalSettings(rerank_first_stage_weight=1.0), MPNET)
    assert [row for row, _ in blended.rerank(query, first)] == [1, 2, 0]
    # Only the top rerank_candidates are rescored; the rest keep their place below them.
    two = Retriever(folder, RetrievalSettings(rerank_first_stage_weight=0.0, rerank_candidates=2), MPNET)
    assert [row for row, _ in two.rerank(query, first)] == [1, 0, 2]


def test_doc_filter_excludes_the_other_documents_in_every_mode(tmp_path):
    texts = ["netcdf files in R", "reading netcdf data", "netcdf and hdf5", "installing packages"]
    vectors = load_sentence_model(MINILM).encode(texts, normalize_embeddings=True)
    folder = tiny_index(tmp_path / "docs", texts, vectors, doc_ids=["d1", "d2", "d1", "d2"])
    retriever = Retriever(folder, dataclasses.replace(RetrievalSettings(), reranker="none"))
    for mode in ("dense", "bm25", "hybrid"):
        unfiltered = retriever.search("netcdf", k=4, mode=mode)
        assert {hit.doc_id for hit in unfiltered} == {"d1", "d2"}, mode
        hits = retriever.search("netcdf", k=4, mode=mode, filters=Filters.parse(["doc=d2"]))
        assert hits and {hit.doc_id for hit in hits} == {"d2"}, mode
