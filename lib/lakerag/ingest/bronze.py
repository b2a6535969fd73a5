"""Bronze ingestion: landing files -> `bronze_documents` (readable PDFs) or `bronze_quarantine`.

Every file listed ends in exactly one of the two tables with status `active`. Rows are versioned
by content: a changed file supersedes its old row, a vanished file leaves a `deleted` tombstone.
A re-run over unchanged files writes nothing, so table versions stay put.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql.types import ArrayType, StringType, StructField, StructType

from lakerag.access.permissions import document_groups, landing_relative
from lakerag.lakehouse.engine import Lakehouse
from lakerag.settings import AccessSettings, BronzeSettings
from lakerag.lakehouse.tables import (
    ACTIVE,
    BRONZE_DOCUMENTS,
    BRONZE_QUARANTINE,
    DELETED,
    SUPERSEDED,
    TableSpec,
    merge_into,
    sync_column,
)

PDF_MAGIC = b"%PDF-"
# PDF readers accept the header anywhere in the first 1024 bytes and the %%EOF marker near the
# end (writers may append a newline or padding), so we look within these windows.
HEADER_WINDOW = 1024
EOF_MARKER = b"%%EOF"
EOF_WINDOW = 1024


@dataclass(frozen=True)
class Verdict:
    """Outcome of inspecting one file: its content hash (None if unread) and why it is rejected."""

    sha256: str | None
    reason: str | None = None
    message: str | None = None


def inspect_file(size_bytes: int, content: bytes | None, max_file_bytes: int) -> Verdict:
    """Decide whether a landing file is an admissible PDF; `content` is None when it was not read."""
    if size_bytes == 0:
        return Verdict(hashlib.sha256(b"").hexdigest(), "empty_file",
                       "file is empty (0 bytes): re-export or re-upload it")
    if size_bytes > max_file_bytes:
        return Verdict(None, "too_large",
                       f"file has {size_bytes} bytes, over bronze.max_file_bytes={max_file_bytes}: "
                       "split it or raise the limit in conf/")
    if content is None:
        return Verdict(None, "vanished",
                       "file was listed but could not be read (removed or replaced while ingesting): "
                       "the next run picks it up if it is back")
    sha256 = hashlib.sha256(content).hexdigest()
    if PDF_MAGIC not in content[:HEADER_WINDOW]:
        return Verdict(sha256, "not_pdf",
                       f"no %PDF- header in the first {HEADER_WINDOW} bytes (starts with "
                       f"{content[:16]!r}): only PDF files are ingested")
    if EOF_MARKER not in content[-EOF_WINDOW:]:
        return Verdict(sha256, "truncated",
                       f"no %%EOF marker in the last {EOF_WINDOW} bytes: the file is incomplete "
                       "(interrupted copy or upload?); copy it again")
    return Verdict(sha256)


def file_version(verdict: Verdict, size_bytes: int, modification_time: datetime | None) -> str:
    """Version key of a file: its content hash, or its size and mtime when the bytes were unread."""
    if verdict.sha256 is not None:
        return f"sha256:{verdict.sha256}"
    stamp = modification_time.isoformat() if modification_time is not None else "unknown"
    return f"unread:{size_bytes}:{stamp}"


def normalise_path(path: Column) -> Column:
    """Path without a `file:` scheme and with its leading slash (Sail drops both)."""
    bare = F.regexp_replace(path, r"^file:(//)?", "")
    has_scheme_or_root = bare.rlike(r"^[A-Za-z][A-Za-z0-9+.-]*:") | bare.startswith("/")
    return F.when(has_scheme_or_root, bare).otherwise(F.concat(F.lit("/"), bare))


LISTING_SCHEMA = "source_path string, file_name string, size_bytes bigint, modification_time timestamp"


def walk_folder(root: Path) -> list[tuple[str, str, int, datetime]]:
    """Files under `root` (recursively, skipping names Spark treats as hidden: `.x`, `_x`)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in sorted(files):
            if name.startswith((".", "_")):
                continue
            path = Path(folder, name)
            stat = path.stat()
            mtime = datetime.fromtimestamp(stat.st_mtime, timezone.utc)
            found.append((str(path.absolute()), name, stat.st_size, mtime))
    return found


def list_landing(spark: SparkSession, landing: str) -> DataFrame:
    """Landing files -> source_path, file_name, size_bytes, modification_time (one row per file).

    A folder this process can see (local disk, a UC volume under /Volumes) is listed with
    os.walk: Sail 0.7.2's binaryFile source skips empty files, lists files above its split size
    twice and reads every file's bytes even when only metadata is selected. Object-store URIs
    (s3://, abfss://, dbfs:/) are listed by the engine's binaryFile source.
    """
    local = Path(landing[len("file:"):] if landing.startswith("file:") else landing)
    if "://" not in landing and not landing.startswith("dbfs:"):
        if not local.is_dir():
            raise FileNotFoundError(f"landing folder {landing} does not exist: check --landing")
        return spark.createDataFrame(walk_folder(local), LISTING_SCHEMA)
    listed = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(landing)
    return (
        listed.select(
            normalise_path(F.col("path")).alias("source_path"),
            F.col("length").alias("size_bytes"),
            F.col("modificationTime").alias("modification_time"),
        )
        .dropDuplicates(["source_path"])
        .withColumn("file_name", F.element_at(F.split("source_path", "/"), -1))
        .select("source_path", "file_name", "size_bytes", "modification_time")
    )


def read_contents(spark: SparkSession, paths: list[str]) -> DataFrame:
    """Bytes of the given files -> source_path, content (files that vanished are absent)."""
    schema = "source_path string, content binary"
    if not paths:
        return spark.createDataFrame([], schema)
    read = spark.read.format("binaryFile").load(paths)
    return read.select(normalise_path(F.col("path")).alias("source_path"), "content").dropDuplicates(
        ["source_path"]
    )


INSPECTED_COLUMNS = [
    StructField("content_sha256", StringType(), True),
    StructField("file_version", StringType(), False),
    StructField("reason", StringType(), True),
    StructField("message", StringType(), True),
    StructField("groups", ArrayType(StringType(), False), False),
]


def path_groups(source_path: str, root: str, access: AccessSettings) -> list[str]:
    """The groups access.rules give the file at `source_path` under the landing folder `root`."""
    return document_groups(landing_relative(source_path, root), access.rules, access.default_groups)


def inspect_files(files: DataFrame, max_file_bytes: int, landing_root: str = "",
                  access: AccessSettings = AccessSettings()) -> DataFrame:
    """Add content_sha256, file_version, reason, message and the groups that may read it (by
    access.rules on its path relative to `landing_root`) to listed files with their content."""

    def inspect_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            verdicts = [
                inspect_file(int(size), content, max_file_bytes)
                for size, content in zip(batch["size_bytes"], batch["content"])
            ]
            yield batch.assign(
                content_sha256=[v.sha256 for v in verdicts],
                file_version=[
                    file_version(v, int(size), None if pd.isna(mtime) else mtime.to_pydatetime())
                    for v, size, mtime in zip(verdicts, batch["size_bytes"], batch["modification_time"])
                ],
                reason=[v.reason for v in verdicts],
                message=[v.message for v in verdicts],
                groups=[path_groups(path, landing_root, access) for path in batch["source_path"]],
            )

    out_schema = StructType(files.schema.fields + INSPECTED_COLUMNS)
    return files.mapInPandas(inspect_batches, out_schema)


def plan_changes(
    incoming: DataFrame, current: DataFrame, present_paths: DataFrame, spec: TableSpec, run_time: datetime
) -> DataFrame:
    """Rows to MERGE into `spec`'s table so that exactly the `incoming` versions are active.

    incoming: this run's versions for the table (table columns without the lifecycle ones);
    current: the table as it is; present_paths: every path listed this run, in either table.
    New versions come out as full rows; existing versions as key + new status + time.
    """
    key = list(spec.key)
    run_ts = F.lit(run_time).cast("timestamp")
    known = current.select(*key, "status")
    inserts = incoming.join(known, key, "left_anti").select(
        *incoming.columns,
        F.lit(ACTIVE).alias("status"),
        run_ts.alias("first_seen_at"),
        run_ts.alias("status_changed_at"),
    )
    back = incoming.select(*key).join(known.filter(F.col("status") != ACTIVE).select(*key), key, "left_semi")
    retired = (
        known.filter(F.col("status") == ACTIVE)
        .select(*key)
        .join(incoming.select(*key), key, "left_anti")
        .join(present_paths.select("source_path", F.lit(True).alias("present")), "source_path", "left")
    )
    status_updates = back.withColumn("status", F.lit(ACTIVE)).unionByName(
        retired.select(
            *key, F.when(F.col("present"), F.lit(SUPERSEDED)).otherwise(F.lit(DELETED)).alias("status")
        )
    )
    updates = status_updates.withColumn("status_changed_at", run_ts)
    columns = [f.name for f in spec.schema.fields]
    return inserts.unionByName(updates, allowMissingColumns=True).select(*columns)


@dataclass
class IngestReport:
    """What one ingestion run saw and changed."""

    files_seen: int
    # (table name, change) -> count, change in {new, reactivated, superseded, deleted}
    changes: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """True if the run wrote anything."""
        return any(self.changes.values())


def summarise_changes(changes: DataFrame) -> dict[str, int]:
    """Count planned changes: new, reactivated (back to active), superseded, deleted."""
    kind = (
        F.when(F.col("first_seen_at").isNotNull(), F.lit("new"))
        .when(F.col("status") == ACTIVE, F.lit("reactivated"))
        .otherwise(F.col("status"))
    )
    return {row["kind"]: row["n"] for row in changes.groupBy(kind.alias("kind")).agg(F.count("*").alias("n")).collect()}


def ingest_bronze(
    spark: SparkSession,
    lakehouse: Lakehouse,
    landing: str,
    settings: BronzeSettings,
    run_time: datetime | None = None,
    access: AccessSettings = AccessSettings(),
) -> IngestReport:
    """Read the landing folder and sync `bronze_documents` and `bronze_quarantine` with it;
    label every active document with the groups access.rules give its path (a change of rules
    re-labels the documents it touches: nothing is read or parsed again)."""
    run_time = run_time or datetime.now(timezone.utc)
    listing = list_landing(spark, landing)
    listed = listing.select("source_path", "size_bytes").collect()
    readable = [r.source_path for r in listed if 0 < r.size_bytes <= settings.max_file_bytes]
    files = listing.join(read_contents(spark, readable), "source_path", "left")
    root = landing_root(landing)
    inspected = inspect_files(files, settings.max_file_bytes, root, access)

    documents_in = inspected.filter(F.col("reason").isNull()).select(
        F.col("content_sha256").alias("doc_id"), "source_path", "file_name", "size_bytes",
        "modification_time", "content", "groups",
    )
    quarantine_in = inspected.filter(F.col("reason").isNotNull()).select(
        "file_version", "source_path", "file_name", "size_bytes", "modification_time", "reason",
        "message", "content",
    )
    present = listing.select("source_path")
    report = IngestReport(files_seen=len(listed))
    for spec, incoming in ((BRONZE_DOCUMENTS, documents_in), (BRONZE_QUARANTINE, quarantine_in)):
        table = lakehouse.table(spec.name)
        changes = plan_changes(incoming, spark.table(table), present, spec, run_time)
        counts = summarise_changes(changes)
        for kind, n in counts.items():
            report.changes[(spec.name, kind)] = n
        if counts:
            merge_into(spark, table, changes, spec.key,
                       matched="UPDATE SET t.status = s.status, t.status_changed_at = s.status_changed_at")
    # Labels depend on the path alone: computed from the listing already collected, not the bytes.
    labels = spark.createDataFrame([(r.source_path, path_groups(r.source_path, root, access)) for r in listed],
                                   "source_path string, groups array<string>")
    relabelled = sync_column(spark, lakehouse.table(BRONZE_DOCUMENTS.name), ["source_path"], labels, "groups")
    if relabelled:
        report.changes[(BRONZE_DOCUMENTS.name, "relabelled")] = relabelled
    return report


def landing_root(landing: str) -> str:
    """The landing folder as its files' source_path values begin (absolute, without file:)."""
    if "://" in landing or landing.startswith("dbfs:"):
        return landing
    return str(Path(landing[len("file:"):] if landing.startswith("file:") else landing).absolute())
