"""Shared setup for the benchmarks: a temporary lakehouse filled from PDFs in data/corpus."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from lakerag.ingest.bronze import ingest_bronze
from lakerag.lakehouse.engine import Lakehouse, spark_session
from lakerag.settings import Settings
from lakerag.ingest.silver import run_silver
from lakerag.lakehouse.tables import ensure_tables

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "corpus"
RESULTS = REPO / "bench" / "results"
GENERATED = REPO / "bench" / "data" / "generated_questions.json"


def section_key(file_name: str, heading_path: list[str]) -> str:
    """A section's identity across parser versions: its file and its NFKC, lower-cased heading path."""
    from lakerag.ingest.pdf_parse import compatible

    return file_name + "|" + " > ".join(compatible(part).lower() for part in heading_path)


def generated_questions(sections: list) -> tuple[list[dict], int]:
    """The saved generated questions (bench/data/generated_questions.json) whose file is among
    `sections` (rows with section_id, file_name, heading_path), each with the section_id it has
    in this lake: ([{question_id, question, section_id, split}], how many matched no section)."""
    import json

    by_key = {section_key(r.file_name, list(r.heading_path)): r.section_id for r in sections}
    files = {r.file_name for r in sections}
    found, unmatched = [], 0
    for item in json.loads(GENERATED.read_text())["questions"] if GENERATED.is_file() else []:
        if item["file_name"] not in files:
            continue
        section = by_key.get(section_key(item["file_name"], item["heading_path"]))
        if section is None:
            unmatched += 1
            continue
        found.append({"question_id": item["question_id"], "question": item["question"], "section_id": section,
                      "split": item["split"]})
    return found, unmatched


@contextmanager
def silver_lakehouse(root: Path, settings: Settings, files: list[str] | None = None) -> Iterator[tuple]:
    """(spark, lakehouse) with bronze and silver built from `files` (names in the corpus) or
    the whole corpus."""
    os.environ.setdefault("RUST_LOG", "error")
    landing = CORPUS
    if files:
        landing = root / "landing"
        landing.mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copyfile(next(CORPUS.rglob(name)), landing / name)
    lakehouse = Lakehouse("bench", "b", root / "lake")
    with spark_session("sail", lakehouse) as spark:
        ensure_tables(spark, lakehouse)
        ingest_bronze(spark, lakehouse, str(landing), settings.bronze)
        run_silver(spark, lakehouse, settings, "sail")
        yield spark, lakehouse


def write_result(name: str, result: dict) -> None:
    """Save a benchmark's figures as bench/results/<name>.json."""
    import json

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


def grown_index(seed: Path, folder: Path, size: int, settings: Settings) -> tuple[Path, "np.ndarray"]:
    """An index folder of `size` rows grown from the `seed` index: its chunks repeated under new
    ids, vectors jittered and re-normalised (no two equal), R-data's rows readable by group hr
    only and the rest by users, random unit rerank vectors of mpnet's size (the reranker's cost
    is real, its scores are not), the seed's sections and section links. Returns the folder and
    the mask of the restricted rows."""
    import json
    from datetime import datetime, timezone

    import numpy as np
    import pandas as pd

    from lakerag.retrieval.index_files import LINKS, write_index
    from lakerag.retrieval.retriever import Retriever
    from lakerag.settings import RetrievalSettings

    rng = np.random.default_rng(0)
    base = Retriever(seed, RetrievalSettings(reranker="none"))
    chunks, vectors = base.chunks, base.dense.reconstruct_n(0, base.dense.ntotal)
    copies = -(-size // len(chunks))
    big = chunks.loc[np.tile(np.arange(len(chunks)), copies)[:size]].reset_index(drop=True)
    big["chunk_id"] = [f"{cid}-{i}" for i, cid in enumerate(big["chunk_id"])]
    restricted = (big["file_name"] == "R-data.pdf").to_numpy()
    big["groups"] = [["hr"] if r else ["users"] for r in restricted]
    jittered = np.tile(vectors, (copies, 1))[:size] + rng.normal(0, 0.02, (size, vectors.shape[1]))
    jittered = (jittered / np.linalg.norm(jittered, axis=1, keepdims=True)).astype(np.float32)
    rerank = rng.normal(size=(size, 768)).astype(np.float32)
    rerank /= np.linalg.norm(rerank, axis=1, keepdims=True)
    manifest = json.loads((seed / "manifest.json").read_text()) | {
        "vectors": size, "rerank_model": settings.models.rerank, "synthetic": True,
        "built_at": datetime.now(timezone.utc).isoformat()}
    links = pd.read_parquet(seed / LINKS) if (seed / LINKS).is_file() else None
    write_index(folder, big, jittered, pd.read_parquet(seed / "sections.parquet"), manifest,
                settings.retrieval.exact_below, rerank, links)
    return folder, restricted
