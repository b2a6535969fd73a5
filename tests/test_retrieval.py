"""Index and retriever on real corpus documents (the Debian FAQ and the R data manual)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from lakerag.cli import main
from lakerag.enrich.index_build import build_index
from lakerag.retrieval.index_files import bm25_tokens
from lakerag.weights import model_path
from lakerag.retrieval.retriever import Filters, Retriever
from lakerag.settings import Settings
from lakerag.lakehouse.tables import SILVER_SECTIONS
from lakerag.enrich.vector_search_sync import ensure_delta_sync_index, vector_search_source
from tests.conftest import assert_same_rows

pytestmark = pytest.mark.slow
NO_RERANK = Settings(retrieval=dataclasses.replace(Settings().retrieval, reranker="none"))


@pytest.fixture(scope="module")
def built(corpus_index):
    return corpus_index


@pytest.fixture(scope="module")
def retriever(built) -> Retriever:
    return Retriever.from_settings(built[1].folder, NO_RERANK)


def test_index_records_its_gold_version_and_is_built_once(spark, built):
    lakehouse, report, root = built
    manifest = json.loads((report.folder / "manifest.json").read_text())
    assert report.built and report.folder.name == f"v{manifest['gold_version']}"
    assert manifest["vectors"] == report.vectors > 100 and manifest["dense"] == "flat"
    again = build_index(spark, lakehouse, Settings(), root)
    assert not again.built and again.folder == report.folder
    # another BM25 stemmer makes another BM25 index: the same gold version is built again (and back)
    assert manifest["bm25_stemmer"] == "english"
    for stemmer in ("", "english"):
        settings = Settings(retrieval=dataclasses.replace(Settings().retrieval, bm25_stemmer=stemmer))
        assert build_index(spark, lakehouse, settings, root).built
        assert json.loads((report.folder / "manifest.json").read_text())["bm25_stemmer"] == stemmer


def test_bm25_puts_the_section_with_the_words_first(retriever):
    [hit] = retriever.search("netCDF", k=1, mode="bm25")
    assert (hit.file_name, hit.heading_path[-1]) == ("R-data.pdf", "Binary data formats")
    assert "netCDF" in hit.section_text


def test_dense_finds_a_paraphrase_that_shares_no_words(retriever):
    query = "conservative versus experimental editions: which suits me?"
    target = "Which Debian distribution (stable/testing/unstable) is better for me?"
    hits = retriever.search(query, k=3, mode="dense")
    assert target in [h.heading_path[-1] for h in hits]
    section = next(h for h in hits if h.heading_path[-1] == target)
    assert not set(bm25_tokens([query])[0]) & set(bm25_tokens([section.section_text])[0])
    assert target not in [h.heading_path[-1] for h in retriever.search(query, k=3, mode="bm25")]


def test_hybrid_fuses_both_rankings(retriever):
    hits = retriever.search("read Excel spreadsheets into R", k=3, mode="hybrid")
    assert hits[0].file_name == "R-data.pdf"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize(
    ("filters", "check"),
    [
        (["file=R-data.pdf"], lambda h: h.file_name == "R-data.pdf"),
        (["pages=40-45"], lambda h: h.page_end >= 40 and h.page_start <= 45),
        (["section=Getting and installing Debian GNU/Linux"],
         lambda h: h.heading_path[0] == "Getting and installing Debian GNU/Linux"),
        (["tag:file_name=debian-faq.pdf"], lambda h: h.file_name == "debian-faq.pdf"),
    ],
)
def test_filters_keep_only_matching_chunks(retriever, filters, check):
    for mode in ("dense", "bm25", "hybrid"):
        hits = retriever.search("how do I install packages and import data", k=5, mode=mode,
                                filters=Filters.parse(filters))
        assert hits and all(check(h) for h in hits), (mode, [h.citation() for h in hits])


def test_filter_that_matches_nothing_returns_nothing(retriever):
    assert retriever.search("data", mode="hybrid", filters=Filters.parse(["file=nope.pdf"])) == []


def test_bad_filter_is_refused():
    with pytest.raises(ValueError, match="KEY=VALUE"):
        Filters.parse(["pages"])


def test_parent_expansion_returns_the_whole_section(spark, built, retriever):
    lakehouse = built[0]
    sections = {r.section_id: r.text for r in spark.table(lakehouse.table(SILVER_SECTIONS.name)).collect()}
    hits = retriever.search("spreadsheet", k=5)
    assert len({h.section_id for h in hits}) == len(hits)  # one hit per section
    for hit in hits:
        assert hit.section_text == sections[hit.section_id] and hit.text in hit.section_text
    assert any(len(h.section_text) > len(h.text) for h in retriever.search("relational databases SQL", k=5))


def test_rescore_reranker_rescores_the_top_candidates_of_a_real_index(built):
    # the graph off: it rescales the scores this test reads (tests/test_graph.py tests it)
    settings = Settings(retrieval=dataclasses.replace(Settings().retrieval, rerank_first_stage_weight=0.0,
                                                      graph_edges=()))
    reranking = Retriever.from_settings(built[1].folder, settings)
    plain = reranking.search("read Excel spreadsheets into R", k=20, rerank=False)
    reranked = reranking.search("read Excel spreadsheets into R", k=4)
    # the four come from the first stage's top 20 chunks, scored by the rerank model's cosine
    # (the z-scores of the first stage reach past 1)
    assert {h.section_id for h in reranked} <= {h.section_id for h in plain}
    assert all(-1 <= h.score <= 1 for h in reranked) and any(h.score > 1 for h in plain[:4])


def test_cross_encoder_reranker_runs_from_a_model_folder(built):
    # No cross-encoder weights can be installed here; MiniLM with a fresh one-logit head
    # exercises the code path (its scores are meaningless until trained).
    settings = Settings(retrieval=dataclasses.replace(
        Settings().retrieval, reranker="cross-encoder", cross_encoder=str(model_path("all-MiniLM-L6-v2")),
        rerank_candidates=4, graph_edges=()))
    reranking = Retriever.from_settings(built[1].folder, settings)
    plain = reranking.search("relational databases", k=4, rerank=False)
    reranked = reranking.search("relational databases", k=4)
    assert {h.section_id for h in reranked} == {h.section_id for h in plain}


def test_search_command_prints_citations(built, capsys):
    folder = built[1].folder
    code = main(["search", "netCDF", "--index", str(folder), "--mode", "bm25", "-k", "2", "--no-rerank"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("1. [") and "R-data.pdf (R-data.pdf), p. " in out and "Binary data formats" in out


def test_search_command_explains_a_missing_index(tmp_path, capsys):
    code = main(["search", "x", "--index-root", str(tmp_path)])
    assert code == 2 and "run `lakerag build-index` first" in capsys.readouterr().err


class FakeVectorSearch:
    """Stands in for databricks-vectorsearch's VectorSearchClient and records the requests."""

    def __init__(self, existing=()):
        self.existing, self.calls = list(existing), []

    def list_indexes(self, endpoint):
        self.calls.append(("list_indexes", endpoint))
        return {"vector_indexes": [{"name": name} for name in self.existing]}

    def create_delta_sync_index(self, **request):
        self.calls.append(("create_delta_sync_index", request))

    def get_index(self, endpoint_name, index_name):
        self.calls.append(("get_index", endpoint_name, index_name))
        return self

    def sync(self):
        self.calls.append(("sync",))


def test_vector_search_index_is_created_with_the_exact_request():
    client = FakeVectorSearch()
    outcome = ensure_delta_sync_index(client, "vs-endpoint", "main.rag.gold_vs_idx", "main.rag.gold_vs", 384)
    assert outcome == "created"
    assert client.calls == [
        ("list_indexes", "vs-endpoint"),
        ("create_delta_sync_index", {
            "endpoint_name": "vs-endpoint", "index_name": "main.rag.gold_vs_idx", "primary_key": "chunk_id",
            "source_table_name": "main.rag.gold_vs", "pipeline_type": "TRIGGERED",
            "embedding_dimension": 384, "embedding_vector_column": "vector"}),
    ]


def test_existing_vector_search_index_is_synced():
    client = FakeVectorSearch(existing=["main.rag.gold_vs_idx"])
    assert ensure_delta_sync_index(client, "vs-endpoint", "main.rag.gold_vs_idx", "main.rag.gold_vs", 384) == "synced"
    assert client.calls[1:] == [("get_index", "vs-endpoint", "main.rag.gold_vs_idx"), ("sync",)]


def test_vector_search_source_has_one_models_vectors_with_citation_columns(spark):
    gold = spark.createDataFrame(
        [("c1", "m1", "section", [1.0, 0.0]), ("c1", "m2", "section", [1.0, 0.0, 0.0]),
         ("c2", "m1", "paragraph", [0.0, 1.0])],
        "item_id string, model_name string, strategy string, vector array<float>")
    chunks = spark.createDataFrame(
        [("c1", "d1", "s1", ["Intro", "Scope"], 2, 3, "text one"), ("c2", "d1", "s1", ["Intro"], 2, 2, "two")],
        "chunk_id string, doc_id string, section_id string, heading_path array<string>, page_start int, "
        "page_end int, text string")
    documents = spark.createDataFrame([("d1", "Guide", "guide.pdf", ["hr", "users"])],
                                      "doc_id string, title string, file_name string, groups array<string>")
    got = vector_search_source(gold, chunks, documents, "m1", "section")
    expected = spark.createDataFrame(
        [("c1", "d1", "s1", "Guide", "guide.pdf", "Intro > Scope", 2, 3, "text one", [1.0, 0.0], ["hr", "users"])],
        got.schema)
    assert_same_rows(got, expected, ["chunk_id"])
