"""Shared fixtures: one embedded Sail engine per test session, a fresh schema per test."""
from __future__ import annotations

import itertools
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from pyspark.sql import SparkSession

from lakerag.lakehouse.engine import Lakehouse, spark_session
from lakerag.lakehouse.tables import ensure_tables

os.environ.setdefault("RUST_LOG", "error")
CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
TEST_CATALOG = "lakerag_test"
_schema_ids = itertools.count()


@pytest.fixture(scope="session")
def lake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lake")


@pytest.fixture(scope="session")
def spark(lake_root: Path) -> Iterator[SparkSession]:
    """The one engine the whole test session shares."""
    with spark_session("sail", Lakehouse(TEST_CATALOG, "default", lake_root)) as session:
        yield session


@pytest.fixture(scope="session")
def corpus_index(spark: SparkSession, lake_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Bronze -> silver -> gold -> index of the Debian FAQ and the R data manual, once per session:
    (lakehouse, IndexReport, index root)."""
    from lakerag.ingest.bronze import ingest_bronze
    from lakerag.enrich.embeddings import run_gold
    from lakerag.enrich.index_build import build_index
    from lakerag.settings import Settings
    from lakerag.ingest.silver import run_silver

    landing = tmp_path_factory.mktemp("corpus-landing")
    for name in ("debian-faq.pdf", "R-data.pdf"):
        shutil.copyfile(corpus_pdf(name), landing / name)
    lakehouse = Lakehouse(TEST_CATALOG, "retrieval", lake_root)
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {TEST_CATALOG}.retrieval")
    ensure_tables(spark, lakehouse)
    settings = Settings()
    ingest_bronze(spark, lakehouse, str(landing), settings.bronze)
    run_silver(spark, lakehouse, settings, "sail")
    run_gold(spark, lakehouse, settings)
    root = tmp_path_factory.mktemp("indexes")
    return lakehouse, build_index(spark, lakehouse, settings, root), root


@pytest.fixture
def lakehouse(spark: SparkSession, lake_root: Path) -> Lakehouse:
    """A schema of its own for each test, with all tables created."""
    lakehouse = Lakehouse(TEST_CATALOG, f"t{next(_schema_ids)}", lake_root)
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {lakehouse.catalog}.{lakehouse.schema}")
    ensure_tables(spark, lakehouse)
    return lakehouse


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    """An empty landing folder."""
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


def corpus_pdf(name: str) -> Path:
    """Path of a PDF in the bundled corpus, by file name."""
    matches = sorted(CORPUS.rglob(name))
    assert matches, f"{name} not in {CORPUS}"
    return matches[0]


def put(landing: Path, name: str, source: str | bytes) -> Path:
    """Place a corpus PDF (by name) or raw bytes into the landing folder as `name`."""
    target = landing / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, bytes):
        target.write_bytes(source)
    else:
        shutil.copyfile(corpus_pdf(source), target)
    return target


@contextmanager
def vanishing_on_read(path: Path) -> Iterator[None]:
    """While active, `path` is deleted just after bronze lists the landing folder and before it
    reads the files' bytes (the race a busy landing folder has)."""
    import lakerag.ingest.bronze

    real_read = lakerag.ingest.bronze.read_contents

    def read_after_file_vanished(spark_, paths):
        path.unlink()
        return real_read(spark_, paths)

    lakerag.ingest.bronze.read_contents = read_after_file_vanished
    try:
        yield
    finally:
        lakerag.ingest.bronze.read_contents = real_read


def http_call(url: str, body: bytes | None = None, timeout: float = 300,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET (or POST a JSON `body`) over real HTTP: (status, headers, raw body), 4xx/5xx included."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def assert_same_rows(actual, expected, key: list[str]) -> None:
    """chispa equality in `key` order (Sail cannot sort by all columns: arrays do not hash)."""
    from chispa import assert_df_equality

    assert_df_equality(actual.orderBy(*key), expected.orderBy(*key), ignore_nullable=True)


@pytest.fixture(scope="session", autouse=True)
def default_mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Where traces of chains a test runs without its own store go (not ./mlflow.db in the checkout)."""
    import mlflow

    uri = f"sqlite:///{tmp_path_factory.mktemp('default-mlflow') / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    yield uri


@pytest.fixture
def mlflow_store(tmp_path: Path, default_mlflow_store: str) -> Iterator[str]:
    """A fresh sqlite MLflow tracking store and registry for one test; returns its URI."""
    import mlflow

    from lakerag.tracking import configure_mlflow, use_experiment

    uri = configure_mlflow(None, None, tmp_path / "mlflow")
    use_experiment("lakerag-test", tmp_path / "mlflow")
    yield uri
    mlflow.set_tracking_uri(default_mlflow_store)
