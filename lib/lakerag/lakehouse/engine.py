"""Spark session factory: one code path on three engines.

- ``sail``: the embedded local engine. pysail's Spark Connect server runs in this process and we
  connect with the Spark Connect client; tables are real Delta tables under a local lake root.
- ``databricks``: the runtime's own session (native Delta, Unity Catalog managed tables).
- ``spark``: classic Spark 4 + delta-spark, for machines that reach Maven (jars are fetched at
  first start, so it cannot run offline and is not exercised by the test suite).

Job code uses only what Spark Connect supports (DataFrame API, Spark SQL, MERGE INTO), so it
runs unchanged on all three.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pyspark.sql import SparkSession

ENGINES = ("sail", "databricks", "spark")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lakehouse:
    """Where the pipeline's tables live: `catalog.schema`, and locally a root folder for data."""

    catalog: str
    schema: str
    # Local folder holding one Delta folder per table; None means managed tables (Unity Catalog).
    root: Path | None = None

    def table(self, name: str) -> str:
        """Three-level name of table `name`."""
        return f"{self.catalog}.{self.schema}.{name}"

    def location(self, name: str) -> str | None:
        """Storage folder of table `name`, or None for a managed table."""
        if self.root is None:
            return None
        return str(Path(self.root).resolve() / self.catalog / self.schema / name)


def default_engine() -> str:
    """`LAKERAG_ENGINE` if set, `databricks` inside a Databricks runtime, else `sail`."""
    if "LAKERAG_ENGINE" in os.environ:
        return os.environ["LAKERAG_ENGINE"]
    return "databricks" if "DATABRICKS_RUNTIME_VERSION" in os.environ else "sail"


@contextmanager
def spark_session(engine: str, lakehouse: Lakehouse) -> Iterator[SparkSession]:
    """Yield a Spark session on `engine` in which `lakehouse`'s three-level names resolve."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    started = time.perf_counter()
    if engine == "sail":
        with _sail_session(lakehouse) as spark:
            log.info("sail engine ready in %.2f s", time.perf_counter() - started)
            yield spark
        return
    if engine == "databricks":
        # The runtime owns this session: we never stop it.
        spark = SparkSession.builder.getOrCreate()
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {lakehouse.catalog}.{lakehouse.schema}")
        yield spark
        return
    spark = _classic_delta_session(lakehouse)
    try:
        yield spark
    finally:
        spark.stop()


@contextmanager
def _sail_session(lakehouse: Lakehouse) -> Iterator[SparkSession]:
    """Start pysail's Spark Connect server in process and connect a client to it."""
    # Sail reads its catalog list from the environment when the server starts. Its memory
    # catalog forgets tables at shutdown; tables.ensure_tables re-registers them from disk.
    os.environ["SAIL_CATALOG__LIST"] = (
        f'[{{type="memory", name="{lakehouse.catalog}", initial_database=["{lakehouse.schema}"]}}]'
    )
    os.environ["SAIL_CATALOG__DEFAULT_CATALOG"] = lakehouse.catalog
    # Sail drops a session idle for 900 s; jobs that spend longer in the LLM between two Spark
    # calls (generate-eval-set, summarize-sections) then lost all their work at the final write.
    # The embedded server lives only as long as this process, so its session need not expire.
    os.environ.setdefault("SAIL_SPARK__SESSION_TIMEOUT_SECS", str(7 * 24 * 3600))
    # spark-submit exports MASTER=local[*] for the JVM it started; our engine is Sail, and the
    # Spark Connect client refuses a remote URL while MASTER is set.
    os.environ.pop("MASTER", None)
    from pysail.spark import SparkConnectServer

    server = SparkConnectServer(ip="127.0.0.1", port=0)
    server.start(background=True)
    _, port = server.listening_address
    # create(), not getOrCreate(): a second engine in the same process must not reuse the
    # client of the first (tests restart the engine to check table re-registration).
    spark = SparkSession.builder.remote(f"sc://127.0.0.1:{port}").create()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    try:
        yield spark
    finally:
        spark.stop()
        server.stop()


def _classic_delta_session(lakehouse: Lakehouse) -> SparkSession:
    """Classic local Spark with Delta; needs Maven reachable to fetch the Delta jars."""
    if lakehouse.catalog != "spark_catalog":
        raise ValueError(
            "engine 'spark' has only the session catalog: pass --catalog spark_catalog "
            f"(got {lakehouse.catalog!r})"
        )
    from delta import configure_spark_with_delta_pip

    builder = (
        SparkSession.builder.master("local[*]")
        .appName("lakerag")
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.session.timeZone", "UTC")
    )
    if lakehouse.root is not None:
        builder = builder.config("spark.sql.warehouse.dir", str(Path(lakehouse.root).resolve()))
    spark = configure_spark_with_delta_pip(builder).getOrCreate()
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {lakehouse.schema}")
    return spark
