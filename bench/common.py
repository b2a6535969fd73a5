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
