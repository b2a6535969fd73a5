"""Table registry: every table's schema is declared here once, and `ensure_tables` creates them.

On Databricks tables are Unity Catalog managed tables; locally they are Delta folders under the
lake root, registered in the engine's catalog (re-registered after a restart, since Sail's
memory catalog forgets them).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import (
    BinaryType,
    DataType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from lakerag.engine import Lakehouse

# Lifecycle of a row in a versioned bronze table: a file's current version is `active`; an
# older version of a file still present is `superseded`; a file gone from landing is `deleted`
# (a tombstone that later layers honour). Rows are never removed.
ACTIVE, SUPERSEDED, DELETED = "active", "superseded", "deleted"


def _field(name: str, data_type: DataType, nullable: bool, comment: str) -> StructField:
    return StructField(name, data_type, nullable, metadata={"comment": comment})


@dataclass(frozen=True)
class TableSpec:
    """A table's name, schema, the columns that key one row, and a description."""

    name: str
    schema: StructType
    key: tuple[str, ...]
    comment: str

    def column_ddl(self) -> str:
        """Column list for CREATE TABLE, with NOT NULL and comments."""
        return ", ".join(
            f"`{f.name}` {f.dataType.simpleString()}{'' if f.nullable else ' NOT NULL'}"
            f" COMMENT {_sql_string(f.metadata['comment'])}"
            for f in self.schema.fields
        )


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_FILE_FACTS = [
    _field("source_path", StringType(), False, "path of the landing file, without a file: scheme"),
    _field("file_name", StringType(), False, "last component of source_path"),
    _field("size_bytes", LongType(), False, "file size when listed"),
    _field("modification_time", TimestampType(), True, "file modification time when first listed (UTC)"),
]
_LIFECYCLE = [
    _field("status", StringType(), False, "active | superseded (file changed) | deleted (file gone)"),
    _field("first_seen_at", TimestampType(), False, "run time that first saw this version (UTC)"),
    _field("status_changed_at", TimestampType(), False, "run time of the latest status change (UTC)"),
]

BRONZE_DOCUMENTS = TableSpec(
    name="bronze_documents",
    schema=StructType(
        [_field("doc_id", StringType(), False, "sha256 of the file bytes (hex)")]
        + _FILE_FACTS
        + [_field("content", BinaryType(), False, "the PDF bytes")]
        + _LIFECYCLE
    ),
    key=("source_path", "doc_id"),
    comment="Raw PDF documents: one row per (file path, content version)",
)

BRONZE_QUARANTINE = TableSpec(
    name="bronze_quarantine",
    schema=StructType(
        [_field("file_version", StringType(), False,
                "sha256:<hex> of the bytes, or unread:<size>:<mtime> when they were not read")]
        + _FILE_FACTS
        + [
            _field("reason", StringType(), False, "machine-readable reason code"),
            _field("message", StringType(), False, "what is wrong and what to do about it"),
            _field("content", BinaryType(), True, "the bytes, when they were read and within the size limit"),
        ]
        + _LIFECYCLE
    ),
    key=("source_path", "file_version"),
    comment="Landing files that are not readable PDFs, with the reason",
)

ALL_TABLES: tuple[TableSpec, ...] = (BRONZE_DOCUMENTS, BRONZE_QUARANTINE)


class TableSchemaMismatch(RuntimeError):
    """An existing table's columns differ from the declared schema."""


def ensure_tables(spark: SparkSession, lakehouse: Lakehouse, specs: Iterable[TableSpec] = ALL_TABLES) -> None:
    """Create missing tables and register existing local ones; fail if a schema has drifted."""
    for spec in specs:
        name = lakehouse.table(spec.name)
        location = lakehouse.location(spec.name)
        if location is None:
            spark.sql(
                f"CREATE TABLE IF NOT EXISTS {name} ({spec.column_ddl()}) USING delta "
                f"COMMENT {_sql_string(spec.comment)}"
            )
        elif (Path(location) / "_delta_log").is_dir():
            # Re-register without a column list: the Delta log is the source of truth.
            spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING delta LOCATION {_sql_string(location)}")
        else:
            spark.sql(
                f"CREATE TABLE IF NOT EXISTS {name} ({spec.column_ddl()}) USING delta "
                f"LOCATION {_sql_string(location)} COMMENT {_sql_string(spec.comment)}"
            )
        _check_schema(spark, name, spec)


def _check_schema(spark: SparkSession, name: str, spec: TableSpec) -> None:
    """Raise if table `name` does not have exactly the declared column names and types."""
    actual = [(f.name, f.dataType.simpleString()) for f in spark.table(name).schema.fields]
    declared = [(f.name, f.dataType.simpleString()) for f in spec.schema.fields]
    if actual != declared:
        raise TableSchemaMismatch(
            f"table {name} has columns {actual} but lakerag {spec.name} declares {declared}; "
            "move the old table away or migrate it before running this version"
        )


def merge_changes(spark: SparkSession, table: str, changes: DataFrame, spec: TableSpec) -> None:
    """MERGE planned rows into `table`: matched keys get the new status, unmatched rows are inserted."""
    view = f"lakerag_changes_{spec.name}"
    changes.createOrReplaceTempView(view)
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in spec.key)
    spark.sql(
        f"MERGE INTO {table} t USING {view} s ON {on} "
        "WHEN MATCHED THEN UPDATE SET t.status = s.status, t.status_changed_at = s.status_changed_at "
        "WHEN NOT MATCHED THEN INSERT *"
    )
    spark.catalog.dropTempView(view)
