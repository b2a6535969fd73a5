"""Query-time retrieval over an index folder: plain Python, no Spark.

dense (FAISS) | bm25 (bm25s) | hybrid (both fused: weighted z-scores or weighted reciprocal
rank fusion), metadata filters applied inside each retriever, an optional reranking stage
(cosine rescoring with a larger bi-encoder, or a CrossEncoder from a folder, blended with the
first stage's score), optionally the sections the best hits link to (`retrieval.graph`), and
parent expansion: hits are grouped by section and carry the whole section text for the prompt,
whether a chunk of the section, its LLM summary or a question the LLM wrote for it matched.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bm25s
import faiss
import numpy as np
import pandas as pd

from lakerag.retrieval.graph import SectionGraph, Via, expand
from lakerag.retrieval.encoders import encode
from lakerag.retrieval.index_files import LINKS, MANIFEST, bm25_tokens
from lakerag.settings import RetrievalSettings
from lakerag.weights import model_path

MODES = ("dense", "bm25", "hybrid")


def zscores(scores: np.ndarray) -> np.ndarray:
    """Scores as standard deviations from their mean (zeros when all are equal), so that a
    cosine and a BM25 score can be weighed against each other."""
    spread = float(scores.std())
    return (scores - scores.mean()) / spread if spread > 0 else np.zeros(len(scores))


@dataclass(frozen=True)
class Filters:
    """Metadata filters; every given condition must hold."""

    doc_ids: tuple[str, ...] = ()
    file_names: tuple[str, ...] = ()
    section_prefix: tuple[str, ...] = ()  # heading path starts with these titles
    page_min: int | None = None  # the chunk ends on or after this page
    page_max: int | None = None  # the chunk starts on or before this page
    tags: tuple[tuple[str, str], ...] = ()  # (key, value) pairs in the chunk's tags
    # The reader's groups: only chunks of documents one of them may read (None: no check, for
    # the operator's own commands). Set from the caller's identity, never from a filter string.
    groups: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, specs: list[str]) -> "Filters":
        """From CLI strings: doc=ID, file=NAME, section=A > B, pages=3-9, tag:KEY=VALUE."""
        values: dict[str, list] = {"doc_ids": [], "file_names": [], "tags": []}
        section: tuple[str, ...] = ()
        page_min = page_max = None
        for spec in specs:
            key, sep, value = spec.partition("=")
            if not sep or not value:
                raise ValueError(f"filter {spec!r}: expected KEY=VALUE")
            if key == "doc":
                values["doc_ids"].append(value)
            elif key == "file":
                values["file_names"].append(value)
            elif key == "section":
                # " > " as in citations: titles themselves may contain "/".
                section = tuple(part.strip() for part in value.split(" > ") if part.strip())
            elif key == "pages":
                low, _, high = value.partition("-")
                page_min, page_max = int(low), int(high or low)
            elif key.startswith("tag:"):
                values["tags"].append((key[4:], value))
            else:
                raise ValueError(f"filter {spec!r}: key must be doc, file, section, pages or tag:NAME")
        return cls(tuple(values["doc_ids"]), tuple(values["file_names"]), section, page_min, page_max,
                   tuple(values["tags"]))

    def mask(self, chunks: pd.DataFrame, readers: dict[str, np.ndarray] | None = None) -> np.ndarray | None:
        """Boolean mask of the chunks that pass, or None when there is no filter; `readers`
        (group -> mask of the chunks it may read, `group_masks`) saves recomputing them."""
        if self == Filters():
            return None
        keep = np.ones(len(chunks), dtype=bool)
        if self.groups is not None:
            readers = group_masks(chunks) if readers is None else readers
            readable = np.zeros(len(chunks), dtype=bool)
            for group in self.groups:
                if group in readers:
                    readable |= readers[group]
            keep &= readable
        if self.doc_ids:
            keep &= chunks["doc_id"].isin(self.doc_ids).to_numpy()
        if self.file_names:
            keep &= chunks["file_name"].isin(self.file_names).to_numpy()
        if self.section_prefix:
            n = len(self.section_prefix)
            keep &= chunks["heading_path"].map(lambda path: tuple(path[:n]) == self.section_prefix).to_numpy()
        if self.page_min is not None:
            keep &= (chunks["page_end"] >= self.page_min).to_numpy()
        if self.page_max is not None:
            keep &= (chunks["page_start"] <= self.page_max).to_numpy()
        for key, value in self.tags:
            keep &= chunks["tags"].map(lambda tags: json.loads(tags).get(key) == value).to_numpy()
        return keep


def group_masks(chunks: pd.DataFrame) -> dict[str, np.ndarray]:
    """Group -> boolean mask of the index rows its members may read (rows without a groups
    column, from an index built before permissions, are readable by no group)."""
    if "groups" not in chunks:
        return {}
    rows = chunks["groups"].reset_index(drop=True).explode().dropna()
    masks: dict[str, np.ndarray] = {}
    for group, positions in rows.groupby(rows).groups.items():
        masks[str(group)] = np.zeros(len(chunks), dtype=bool)
        masks[str(group)][np.asarray(positions)] = True
    return masks


@dataclass
class Hit:
    """One retrieved section (its best chunk), with what a citation needs."""

    chunk_id: str
    section_id: str
    doc_id: str
    title: str
    file_name: str
    heading_path: list[str]
    page_start: int
    page_end: int
    score: float
    text: str  # the matching chunk, or the section's summary or generated question
    section_text: str  # the whole section, for the prompt
    kind: str = "chunk"  # what matched: chunk | summary | question
    scores: dict[str, float] = field(default_factory=dict)
    relevance: float = 0.0  # cosine of the query and the matching chunk (index embedding model)
    paragraph_pages: list[int] = field(default_factory=list)  # page of each paragraph of section_text
    via: Via | None = None  # the link that pulled this section in (graph retrieval), if one did

    def citation(self) -> str:
        """'title, p. 3-4, Section > Subsection' for display."""
        pages = f"p. {self.page_start}" + (f"-{self.page_end}" if self.page_end != self.page_start else "")
        return f"{self.title} ({self.file_name}), {pages}, {' > '.join(self.heading_path)}"


class Retriever:
    """Searches one index folder; load it once, query many times."""

    def __init__(self, folder: Path, retrieval: RetrievalSettings = RetrievalSettings(),
                 rerank_model: str = "all-mpnet-base-v2"):
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / MANIFEST).read_text())
        self.chunks = pd.read_parquet(self.folder / "chunks.parquet")
        sections = pd.read_parquet(self.folder / "sections.parquet")
        self.section_text = dict(zip(sections["section_id"], sections["text"]))
        self.paragraph_pages = (dict(zip(sections["section_id"],
                                         sections["paragraph_pages"].map(lambda pages: [int(p) for p in pages])))
                                if "paragraph_pages" in sections else {})
        self.dense = faiss.read_index(str(self.folder / "dense.faiss"))
        # One query at a time: FAISS's OpenMP threads only add overhead and fight torch's
        # threads for the cores (measured: 100k flat search 6.8 ms on 1 thread, 13.8 ms on 2).
        faiss.omp_set_num_threads(1)
        self.sparse = bm25s.BM25.load(str(self.folder / "bm25"))
        self.stemmer = self.manifest.get("bm25_stemmer", "")  # queries are stemmed as the index was
        stored = self.folder / "rerank.npy"
        self.rerank_vectors = np.load(stored) if stored.is_file() and self.manifest.get("rerank_model") == rerank_model else None
        self.settings, self.rerank_model = retrieval, rerank_model
        self._encoded: dict[str, np.ndarray] = {}  # rerank vectors encoded on demand, by chunk id
        self._section_of_row = self.chunks["section_id"].to_numpy()
        # Rows of each section, chunks in order before its summary: a section a link pulls in
        # shows its first chunk.
        order = self.chunks.assign(row=np.arange(len(self.chunks)), summary=self.chunks["chunk_index"] < 0)
        self._rows_of_section = {section: rows["row"].to_numpy() for section, rows in
                                 order.sort_values(["summary", "chunk_index"], kind="stable").groupby("section_id")}
        links = self.folder / LINKS
        self.graph = SectionGraph(pd.read_parquet(links)) if links.is_file() else None
        self._readers = group_masks(self.chunks)
        # BM25 runs beside the dense search: query encoding and FAISS release the GIL.
        self._sparse_worker = ThreadPoolExecutor(1, thread_name_prefix="bm25")

    @classmethod
    def from_settings(cls, folder: Path, settings) -> "Retriever":
        """A retriever configured by `settings.retrieval` and `settings.models`."""
        return cls(folder, settings.retrieval, settings.models.rerank)

    @property
    def version(self) -> dict[str, Any]:
        """Which index answers: its version folder (v<gold version>) and the gold table version."""
        return {"backend": "local", "version": self.folder.name, "gold_version": self.manifest.get("gold_version"),
                "built_at": self.manifest.get("built_at")}

    def documents(self, groups: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """The indexed documents (those `groups` may read; None: all) with their top-level
        section titles in page order, by title (the chat page's filters)."""
        readable = Filters(groups=groups).mask(self.chunks, self._readers)
        chunks = self.chunks if readable is None else self.chunks[readable]
        headed = chunks[chunks["heading_path"].map(len) > 0]
        first_page = (headed.assign(top=headed["heading_path"].map(lambda path: path[0]))
                      .groupby(["doc_id", "top"])["page_start"].min().reset_index()
                      .sort_values(["doc_id", "page_start"], kind="stable"))
        tops = first_page.groupby("doc_id")["top"].apply(list).to_dict()
        named = chunks.drop_duplicates("doc_id")
        documents = [{"doc_id": row.doc_id, "title": row.title, "file_name": row.file_name,
                      "sections": tops.get(row.doc_id, [])} for row in named.itertuples(index=False)]
        return sorted(documents, key=lambda d: d["title"].lower())

    def embed_query(self, query: str) -> np.ndarray:
        """The query's unit vector from the index's embedding model."""
        return encode(self.manifest["model"], [query], self.settings.encoder_runtime)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of `texts` by the index's embedding model (for checking citations)."""
        return encode(self.manifest["model"], texts, self.settings.encoder_runtime)

    def dense_ranking(self, query: np.ndarray, k: int, mask: np.ndarray | None) -> list[tuple[int, float]]:
        """(row, cosine) of the k nearest chunks to the query vector that pass the mask."""
        params, bits = None, None
        if mask is not None and not mask.all():
            if not mask.any():
                return []
            # A bitmap selector: one bit per row, checked in O(1) (measured at 100k rows with two
            # thirds allowed: 9.7 ms a flat search, against 17.9 ms with an IDSelectorBatch). The
            # selector points into `bits`, which must stay alive until the search returns.
            bits = np.packbits(mask, bitorder="little")
            params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits)))
        scores, rows = self.dense.search(query, min(k, self.dense.ntotal), params=params)
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]

    def bm25_ranking(self, query: str, k: int, mask: np.ndarray | None) -> list[tuple[int, float]]:
        """(row, BM25 score) of the k best chunks with a positive score that pass the mask."""
        tokens = bm25_tokens([query], self.stemmer)
        if not tokens[0]:
            return []
        k = min(k, len(self.chunks))
        weights = mask.astype(np.float32) if mask is not None and not mask.all() else None
        rows, scores = self.sparse.retrieve([tokens[0]], k=k, weight_mask=weights, show_progress=False,
                                            n_threads=1)
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if s > 0]

    def fuse(self, dense: list[tuple[int, float]], sparse: list[tuple[int, float]], query: np.ndarray,
             tokens: list[str]) -> list[tuple[int, float]]:
        """The dense and BM25 rankings as one, by retrieval.fusion and its weights."""
        config = self.settings
        if config.fusion == "rrf":
            fused: dict[int, float] = {}
            for ranking, weight in ((dense, config.dense_weight), (sparse, config.bm25_weight)):
                for rank, (row, _) in enumerate(ranking, start=1):
                    fused[row] = fused.get(row, 0.0) + weight / (config.rrf_k + rank)
            return sorted(fused.items(), key=lambda item: -item[1])
        rows = np.array(sorted({row for row, _ in dense} | {row for row, _ in sparse}), dtype=np.int64)
        if not len(rows):
            return []
        # Both scores of every candidate, also where it was below the other retriever's cut.
        cosines = self.dense.reconstruct_batch(rows) @ query
        bm25 = self.sparse.get_scores(tokens)[rows] if tokens else np.zeros(len(rows))
        fused_scores = config.dense_weight * zscores(cosines) + config.bm25_weight * zscores(bm25)
        order = np.argsort(-fused_scores, kind="stable")
        return [(int(rows[i]), float(fused_scores[i])) for i in order]

    def rerank(self, query: str, ranking: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """Rescore the top candidates with the reranker (plus retrieval.rerank_first_stage_weight
        times their first-stage score); the rest keep their order below them."""
        config = self.settings
        if config.reranker == "none" or not ranking:
            return ranking
        head, tail = ranking[: config.rerank_candidates], ranking[config.rerank_candidates:]
        rows = [row for row, _ in head]
        texts = self.chunks["indexed_text"].iloc[rows].tolist()  # what the stored vectors embed
        if config.reranker == "cross-encoder":
            scores = np.asarray(self._cross_encoder().predict([(query, text) for text in texts],
                                                              show_progress_bar=False), dtype=np.float64)
        else:
            q = self.rescoring_vectors([query])[0]
            scores = (self._rerank_vectors(rows, texts) @ q).astype(np.float64)
        if config.rerank_first_stage_weight:
            first = np.array([score for _, score in head])
            scores = zscores(scores) + config.rerank_first_stage_weight * zscores(first)
        rescored = sorted(zip(rows, (float(s) for s in scores)), key=lambda item: -item[1])
        return rescored + tail

    def rescoring_vectors(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of `texts` by the rescoring model."""
        return encode(self.rerank_model, texts, self.settings.encoder_runtime)

    def _rerank_vectors(self, rows: list[int], texts: list[str]) -> np.ndarray:
        """Stored reranking vectors when the index has them, else encoded now and remembered."""
        if self.rerank_vectors is not None:
            return self.rerank_vectors[rows]
        ids = self.chunks["chunk_id"].iloc[rows].tolist()
        todo = [(cid, text) for cid, text in zip(ids, texts) if cid not in self._encoded]
        if todo:
            vectors = self.rescoring_vectors([text for _, text in todo])
            self._encoded.update(zip((cid for cid, _ in todo), vectors))
        return np.stack([self._encoded[cid] for cid in ids])

    def _cross_encoder(self):
        from sentence_transformers import CrossEncoder

        if not hasattr(self, "_cross"):
            self._cross = CrossEncoder(str(model_path(self.settings.cross_encoder)), device="cpu")
        return self._cross

    def search(self, query: str, k: int = 5, mode: str = "hybrid", filters: Filters = Filters(),
               rerank: bool = True) -> list[Hit]:
        """The k best sections for `query`: each hit is a section's best chunk, with the
        whole section's text (parent expansion)."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
        if not query.strip():
            raise ValueError("empty query")
        mask = filters.mask(self.chunks, self._readers)
        depth = max(self.settings.candidates, k)
        sparse = self._sparse_worker.submit(self.bm25_ranking, query, depth, mask) if mode != "dense" else None
        vector = self.embed_query(query)
        dense = self.dense_ranking(vector, depth, mask) if mode != "bm25" else []
        if mode == "hybrid":
            ranking = self.fuse(dense, sparse.result(), vector[0], bm25_tokens([query], self.stemmer)[0])
        else:
            ranking = dense if mode == "dense" else sparse.result()
        if rerank:
            ranking = self.rerank(query, ranking)
        via: dict[str, Via] = {}
        if self.settings.graph_edges and self.graph is not None:
            ranking, via = self.graph_ranking(ranking, mask)
        return self._section_hits(ranking, k, vector[0], via)

    def _first_row(self, section_id: str, mask: np.ndarray | None) -> int | None:
        """The section's first index row that passes the mask (None: none does, or not indexed)."""
        rows = self._rows_of_section.get(section_id, ())
        return next((int(r) for r in rows if mask is None or mask[r]), None)

    def graph_ranking(self, ranking: list[tuple[int, float]],
                      mask: np.ndarray | None) -> tuple[list[tuple[int, float]], dict[str, Via]]:
        """The ranking with the sections its best hits link to scored in (retrieval.graph_*; one
        row a section, scores scaled to best = 1), and how each pulled-in section came in. Only
        sections with a row the mask passes are pulled in, so filters and permissions hold."""
        config = self.settings
        best: dict[str, tuple[int, float]] = {}
        for row, score in ranking:
            best.setdefault(self._section_of_row[row], (row, score))
        expanded = expand([(section, score) for section, (_, score) in best.items()], self.graph,
                          config.graph_edges, config.graph_seeds, config.graph_damping, config.graph_hops,
                          config.graph_max_degree, lambda section: self._first_row(section, mask) is not None)
        rows = [(best[section][0] if section in best else self._first_row(section, mask), score)
                for section, score, _ in expanded]
        return rows, {section: how for section, _, how in expanded if how is not None}

    def _section_hits(self, ranking: list[tuple[int, float]], k: int, query: np.ndarray,
                      via: dict[str, Via] | None = None) -> list[Hit]:
        """The best chunk of each of the first k sections in `ranking`, as hits, with the
        cosine of its chunk and the query vector as relevance, and the link that pulled it in."""
        if k <= 0:
            return []
        via = via or {}
        best: dict[str, tuple[int, float]] = {}
        for row, score in ranking:
            best.setdefault(self._section_of_row[row], (row, score))
            if len(best) == k:
                break
        return [self._hit(row, score, query, via.get(self._section_of_row[row])) for row, score in best.values()]

    def _hit(self, row: int, score: float, query: np.ndarray, via: Via | None = None) -> Hit:
        """Index row `row` as a hit, its relevance the cosine of its vector and the query's."""
        chunk = self.chunks.iloc[row]
        return Hit(
            chunk_id=chunk.chunk_id, section_id=chunk.section_id, doc_id=chunk.doc_id, title=chunk.title,
            file_name=chunk.file_name, heading_path=list(chunk.heading_path),
            page_start=int(chunk.page_start), page_end=int(chunk.page_end), score=score, text=chunk.text,
            section_text=self.section_text.get(chunk.section_id, chunk.text), kind=chunk.get("kind", "chunk"),
            paragraph_pages=self.paragraph_pages.get(chunk.section_id, []),
            relevance=float(self.dense.reconstruct(int(row)) @ query), via=via)

    def linked(self, query: str, hit: Hit, limit: int, filters: Filters = Filters(),
               exclude: set[str] | frozenset[str] = frozenset()) -> list[Hit]:
        """Up to `limit` sections, none in `exclude`, that `hit`'s section links to or names ("see
        Section 3.1"), in the edges' order, that `filters` pass (score 0: they were not ranked)."""
        if self.graph is None or limit <= 0:
            return []
        mask = filters.mask(self.chunks, self._readers)
        vector = self.embed_query(query)[0]
        hits = []
        for target, kind, text in self.graph.neighbours(hit.section_id, ("link", "reference"),
                                                        self.settings.graph_max_degree):
            row = self._first_row(target, mask) if target not in exclude else None
            if row is not None:
                hits.append(self._hit(row, 0.0, vector, Via(hit.section_id, kind, text)))
            if len(hits) == limit:
                break
        return hits
