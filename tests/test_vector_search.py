"""The Databricks Vector Search retriever against a stand-in index (a remote service): the exact
query we send (filters translated, the query embedded here) and how its rows become section hits."""
from __future__ import annotations

import numpy as np
import pytest

from lakerag.retrieval.retriever import Filters
from lakerag.retrieval.vector_search import COLUMNS, VectorSearchRetriever, vector_search_filters
from lakerag.settings import RetrievalSettings, Settings

ROWS = [  # what Vector Search returns, best first: two chunks of one section, then another section
    ["c1", "d1", "s1", "Debian FAQ", "debian-faq.pdf", "Packages > Format", 35, 36, "A .deb is an ar archive.", 0.9],
    ["c2", "d1", "s1", "Debian FAQ", "debian-faq.pdf", "Packages > Format", 36, 36, "It holds two tarballs.", 0.8],
    ["c3", "d1", "s2", "Debian FAQ", "debian-faq.pdf", "Updates > apt", 40, 41, "Run apt upgrade.", 0.7],
]


class FakeIndex:
    def __init__(self):
        self.requests = []

    def similarity_search(self, **request):
        self.requests.append(request)
        return {"manifest": {"columns": [{"name": c} for c in COLUMNS + ["score"]]},
                "result": {"row_count": len(ROWS), "data_array": ROWS}}


class FakeClient:
    def __init__(self):
        self.index, self.calls = FakeIndex(), []

    def get_index(self, endpoint_name: str, index_name: str):
        self.calls.append((endpoint_name, index_name))
        return self.index


def settings(**retrieval) -> Settings:
    return Settings(retrieval=RetrievalSettings(backend="vector_search", vector_search_endpoint="vs",
                                                vector_search_index="main.rag.gold_vs_idx", **retrieval))


def test_a_hybrid_query_with_translated_filters_is_sent_and_rows_become_one_hit_per_section():
    client = FakeClient()
    retriever = VectorSearchRetriever.from_settings(settings(), client)
    hits = retriever.search("What is a .deb file?", k=2, filters=Filters.parse(["file=debian-faq.pdf", "pages=30-40"]))
    [request] = client.index.requests
    vector = request.pop("query_vector")
    assert client.calls == [("vs", "main.rag.gold_vs_idx")]
    assert request == {"columns": COLUMNS, "query_text": "What is a .deb file?", "num_results": 50,
                       "filters": {"file_name": ["debian-faq.pdf"], "page_end >=": 30, "page_start <=": 40},
                       "query_type": "HYBRID"}
    assert np.allclose(vector, retriever.embed(["What is a .deb file?"])[0], atol=1e-6)
    assert [(h.section_id, h.chunk_id, h.heading_path, h.page_start) for h in hits] == [
        ("s1", "c1", ["Packages", "Format"], 35), ("s2", "c3", ["Updates", "apt"], 40)]
    assert hits[0].relevance > hits[1].relevance  # the .deb chunk is closer to the question
    assert retriever.version == {"backend": "vector_search", "version": "main.rag.gold_vs_idx", "gold_version": None,
                                 "built_at": None}


def test_a_section_filter_keeps_rows_under_that_heading_and_dense_mode_is_an_ann_query():
    client = FakeClient()
    retriever = VectorSearchRetriever.from_settings(settings(), client)
    hits = retriever.search("upgrade", k=3, mode="dense", filters=Filters.parse(["section=Updates"]))
    assert [h.section_id for h in hits] == ["s2"]
    assert client.index.requests[0]["query_type"] == "ANN" and client.index.requests[0]["filters"] == {}


def test_filters_vector_search_cannot_apply_are_refused():
    with pytest.raises(ValueError, match="tag filters are not available"):
        vector_search_filters(Filters.parse(["tag:team=docs"]))
    with pytest.raises(ValueError, match="Vector Search answers hybrid or dense"):
        VectorSearchRetriever.from_settings(settings(), FakeClient()).search("x", mode="bm25")


def test_vector_search_without_an_endpoint_is_a_settings_error():
    from lakerag.settings import SettingsError

    with pytest.raises(SettingsError, match="needs retrieval.vector_search_endpoint"):
        RetrievalSettings(backend="vector_search")
