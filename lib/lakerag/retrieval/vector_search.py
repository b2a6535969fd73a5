"""Query-time retrieval from the Databricks Vector Search index that `build-index
--vector-search-endpoint` syncs (`lakerag.enrich.vector_search_sync`): plain Python, no Spark.

The index holds self-managed vectors, so the query is embedded here with the index's model and
sent with its text as a HYBRID query (ANN for mode dense). Our filters become Vector Search's
standard-endpoint filter dictionary (doc and file as OR lists, pages as range keys); a section
prefix is applied to the returned rows (Vector Search's LIKE matches tokens, not prefixes);
tag filters are refused: the source table has no tags. The reader's groups filter the `groups`
column inside the query. Hits are grouped by section as in
`Retriever`; the index stores chunk text only, so a hit's section text is its chunk's.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from lakerag.retrieval.encoders import encode
from lakerag.retrieval.retriever import Filters, Hit

COLUMNS = ["chunk_id", "doc_id", "section_id", "title", "file_name", "heading_path", "page_start", "page_end", "text"]
# The source table's groups column is an ARRAY<STRING>; a list value matches rows holding any of
# them (the filtering guide's array-column support on standard endpoints).
QUERY_TYPES = {"hybrid": "HYBRID", "dense": "ANN"}
NO_GROUP = "lakerag.no-group"
MAX_RESULTS = 200  # Vector Search returns at most 200 rows to a hybrid query


def vector_search_filters(filters: Filters) -> dict[str, Any]:
    """Our filters as a standard-endpoint filter dictionary (keys AND-ed, a list is an OR)."""
    if filters.tags:
        raise ValueError("tag filters are not available with retrieval.backend vector_search "
                         "(the Vector Search source table has no tags)")
    query: dict[str, Any] = {}
    if filters.doc_ids:
        query["doc_id"] = list(filters.doc_ids)
    if filters.file_names:
        query["file_name"] = list(filters.file_names)
    if filters.page_min is not None:
        query["page_end >="] = filters.page_min
    if filters.page_max is not None:
        query["page_start <="] = filters.page_max
    if filters.groups is not None:
        # The reader's groups are part of the index query, as they are inside the local search:
        # a chunk no group of theirs may read is never among the results (a reader in no group
        # gets a group name no document carries, so nothing).
        query["groups"] = list(filters.groups) or [NO_GROUP]
    return query


class VectorSearchRetriever:
    """Searches one Vector Search index; `index` is the SDK's index object (or a stand-in)."""

    def __init__(self, index: Any, index_name: str, embedding_model: str, candidates: int = 50,
                 encoder_runtime: str = "onnxruntime"):
        self.index, self.index_name, self.embedding_model = index, index_name, embedding_model
        self.candidates, self.encoder_runtime = candidates, encoder_runtime

    @classmethod
    def from_settings(cls, settings, client: Any = None) -> "VectorSearchRetriever":
        """The index retrieval.vector_search_index on retrieval.vector_search_endpoint."""
        retrieval = settings.retrieval
        if not retrieval.vector_search_index:
            raise ValueError("retrieval.vector_search_index is empty: register-chain names it from --catalog/--schema")
        if client is None:
            from databricks.vector_search.client import VectorSearchClient

            client = VectorSearchClient(disable_notice=True)
        index = client.get_index(endpoint_name=retrieval.vector_search_endpoint,
                                 index_name=retrieval.vector_search_index)
        return cls(index, retrieval.vector_search_index, settings.models.embedding, retrieval.candidates,
                   retrieval.encoder_runtime)

    @property
    def version(self) -> dict[str, Any]:
        """Which index answers (Vector Search keeps it in line with gold; it has no folder version)."""
        return {"backend": "vector_search", "version": self.index_name, "gold_version": None, "built_at": None}

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of `texts` by the index's embedding model."""
        return encode(self.embedding_model, texts, self.encoder_runtime)

    def search(self, query: str, k: int = 5, mode: str = "hybrid", filters: Filters = Filters(),
               rerank: bool = True) -> list[Hit]:
        """The k best sections for `query` (rerank is not applied: Vector Search ranks)."""
        if mode not in QUERY_TYPES:
            raise ValueError(f"mode {mode!r}: Vector Search answers {' or '.join(QUERY_TYPES)}")
        if not query.strip():
            raise ValueError("empty query")
        vector = self.embed([query])[0]
        response = self.index.similarity_search(
            columns=COLUMNS, query_text=query, query_vector=vector.tolist(), filters=vector_search_filters(filters),
            num_results=min(MAX_RESULTS, max(self.candidates, k)), query_type=QUERY_TYPES[mode])
        names = [column["name"] for column in response["manifest"]["columns"]]
        rows = [dict(zip(names, values)) for values in response.get("result", {}).get("data_array", [])]
        if filters.section_prefix:
            prefix = list(filters.section_prefix)
            rows = [r for r in rows if r["heading_path"].split(" > ")[:len(prefix)] == prefix]
        best: dict[str, dict[str, Any]] = {}
        for row in rows:
            best.setdefault(row["section_id"], row)
            if len(best) == k:
                break
        chosen = list(best.values())
        relevance = self.embed([row["text"] for row in chosen]) @ vector if chosen else []
        return [Hit(chunk_id=row["chunk_id"], section_id=row["section_id"], doc_id=row["doc_id"], title=row["title"],
                    file_name=row["file_name"], heading_path=row["heading_path"].split(" > "),
                    page_start=int(row["page_start"]), page_end=int(row["page_end"]), score=float(row["score"]),
                    text=row["text"], section_text=row["text"], relevance=float(similarity))
                for row, similarity in zip(chosen, relevance)]
