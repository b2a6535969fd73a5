"""Table registry: every table's schema is declared here once, and `ensure_tables` creates them.

On Databricks tables are Unity Catalog managed tables; locally they are Delta folders under the
lake root, registered in the engine's catalog (re-registered after a restart, since Sail's
memory catalog forgets them).
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DataType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from lakerag.lakehouse.engine import Lakehouse

log = logging.getLogger(__name__)

# Lifecycle of a row in a versioned bronze table: a file's current version is `active`; an
# older version of a file still present is `superseded`; a file gone from landing is `deleted`
# (a tombstone that later layers honour). Rows are never removed.
ACTIVE, SUPERSEDED, DELETED = "active", "superseded", "deleted"
# gold_embeddings kind (and strategy) of a section summary's vector, and of one question the
# LLM wrote for a section (doc2query); chunks have kind "chunk".
SUMMARY, QUESTION = "summary", "question"


def _field(name: str, data_type: DataType, nullable: bool, comment: str) -> StructField:
    return StructField(name, data_type, nullable, metadata={"comment": comment})


@dataclass(frozen=True)
class TableSpec:
    """A table's name, schema, the columns that key one row, and a description."""

    name: str
    schema: StructType
    key: tuple[str, ...]
    comment: str
    # Scratch tables hold nothing between runs: one made by an older lakerag is dropped and
    # recreated rather than migrated (a column inside a nested struct cannot be added in place).
    scratch: bool = False

    def column_ddl(self) -> str:
        """Column list for CREATE TABLE, with comments.

        No NOT NULL constraints: Sail 0.7.2 rejects a write into a NOT NULL column whenever the
        source column is *declared* nullable, even if no value is null (a filtered MERGE source
        is enough), so the declared nullability stays documentation, checked by the tests.
        """
        return ", ".join(
            f"`{f.name}` {f.dataType.simpleString()} COMMENT {_sql_string(f.metadata['comment'])}"
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

_GROUPS = _field("groups", ArrayType(StringType(), False), True,
                  "groups allowed to read the document (access.rules on its landing path)")

BRONZE_DOCUMENTS = TableSpec(
    name="bronze_documents",
    schema=StructType(
        [_field("doc_id", StringType(), False, "sha256 of the file bytes (hex)")]
        + _FILE_FACTS
        + [_field("content", BinaryType(), False, "the PDF bytes")]
        + _LIFECYCLE
        + [_GROUPS]
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

BRONZE_TABLES: tuple[TableSpec, ...] = (BRONZE_DOCUMENTS, BRONZE_QUARANTINE)

_DOC_KEY = [
    _field("doc_id", StringType(), False, "bronze doc_id: sha256 of the PDF bytes"),
    _field("parser_version", StringType(), False, "parser that produced the row"),
]
_DOC_SOURCE = [
    _field("source_path", StringType(), False, "a bronze path with these bytes"),
    _field("file_name", StringType(), False, "file name of source_path"),
]

SILVER_DOCUMENTS = TableSpec(
    name="silver_documents",
    schema=StructType(
        _DOC_KEY + _DOC_SOURCE + [
            _field("title", StringType(), False, "document title: PDF metadata, else the file name"),
            _field("language", StringType(), True, "ISO 639-1 code detected from the text (py3langid)"),
            _field("page_count", IntegerType(), False, "pages in the PDF"),
            _field("pages_with_text", IntegerType(), False, "pages with text: a text layer, or OCR"),
            _field("outline_entries", IntegerType(), False, "bookmarks used for sections (0: headings from fonts)"),
            _field("warnings", ArrayType(StringType(), False), False,
                   "what was repaired or skipped to read it (broken xref, unreadable outline or pages)"),
            _field("parsed_at", TimestampType(), False, "run time of the parse (UTC)"),
            _field("groups", ArrayType(StringType(), False), True,
                   "groups allowed to read it: those of its active bronze paths together"),
            _field("ocr_pages", ArrayType(IntegerType(), False), True,
                   "pages read by OCR (no usable text layer), 1-based; null: OCR off, or parsed before OCR existed"),
            _field("layout_pages", ArrayType(IntegerType(), False), True,
                   "pages read in a layout model's region order (the heuristic reader was unsure), 1-based; "
                   "null: the layout model off, or parsed before it existed"),
        ]
    ),
    key=("doc_id", "parser_version"),
    comment="Parsed documents: one row per bronze document that parsed",
)

SECTION_FIELDS = [
    _field("section_id", StringType(), False, "hash of doc id, parser version, position, heading path, text"),
    _field("doc_id", StringType(), False, "bronze doc_id"),
    _field("ordinal", IntegerType(), False, "position of the section in the document, from 0"),
    _field("parent_section_id", StringType(), True, "enclosing section (null at the top level)"),
    _field("heading_path", ArrayType(StringType(), False), False, "titles from the top level down to this section"),
    _field("level", IntegerType(), False, "depth: 1 = top-level heading, 0 = text before the first heading"),
    _field("title", StringType(), False, "the section's heading"),
    _field("origin", StringType(), False, "outline (PDF bookmarks) | headings (font heuristics) | front_matter"),
    _field("page_start", IntegerType(), False, "first page, 1-based"),
    _field("page_end", IntegerType(), False, "last page, 1-based"),
    _field("text", StringType(), False, "body text; paragraphs separated by a blank line; heading excluded"),
    _field("paragraph_pages", ArrayType(IntegerType(), False), False, "page of each paragraph of text"),
    _field("parser_version", StringType(), False, "parser that produced the row"),
    _field("table_boxes", ArrayType(ArrayType(DoubleType(), False), False), True,
           "box of each table paragraph, in order: x0, bottom, x1, top in PDF points (origin bottom left); "
           "null: parsed before boxes were kept"),
]
SILVER_SECTIONS = TableSpec(
    name="silver_sections",
    schema=StructType(SECTION_FIELDS),
    key=("section_id",),
    comment="Sections of parsed documents with heading path and page range",
)

CHUNK_FIELDS = [
        _field("chunk_id", StringType(), False, "hash of section id, strategy fingerprint, index, text"),
        _field("doc_id", StringType(), False, "bronze doc_id"),
        _field("section_id", StringType(), False, "parent section"),
        _field("strategy", StringType(), False, "section | paragraph | fixed"),
        _field("chunker_fingerprint", StringType(), False, "hash of the strategy's settings and chunker version"),
        _field("chunk_index", IntegerType(), False, "position within the section for this strategy"),
        _field("text", StringType(), False, "chunk text"),
        _field("token_count", IntegerType(), False, "tokens by the embedding model's tokenizer"),
        _field("page_start", IntegerType(), False, "first page, 1-based"),
        _field("page_end", IntegerType(), False, "last page, 1-based"),
        _field("heading_path", ArrayType(StringType(), False), False, "heading path of the parent section"),
        _field("tags", MapType(StringType(), StringType(), True), False,
               "metadata for filters: doc_title, file_name, language"),
        _field("chunk_kind", StringType(), True,
               "text | table (a ruled table as Markdown, caption first, whole); null: chunked before tables"),
        _field("bbox", ArrayType(DoubleType(), False), True,
               "a table chunk's box on page_start: x0, bottom, x1, top in PDF points (origin bottom left); "
               "null for text"),
]
SILVER_CHUNKS = TableSpec(
    name="silver_chunks",
    schema=StructType(CHUNK_FIELDS),
    key=("chunk_id",),
    comment="Chunks for embedding, one set per chunking strategy",
)

LINK_FIELDS = [
    _field("link_id", StringType(), False, "hash of source section, kind, target section, text"),
    _field("doc_id", StringType(), False, "bronze doc_id (links stay within one document)"),
    _field("from_section_id", StringType(), False, "the section that links or refers"),
    _field("to_section_id", StringType(), True, "the section it leads to; null: a reference that names no section"),
    _field("kind", StringType(), False,
           "link (PDF link annotation) | reference (\"see Section 3.1\" in the text) | parent | next"),
    _field("text", StringType(), False, "the words of the link or reference (empty for parent and next)"),
    _field("page", IntegerType(), False, "page of the link or reference (of the source section for parent/next)"),
    _field("parser_version", StringType(), False, "parser that produced the row"),
]
SILVER_SECTION_LINKS = TableSpec(
    name="silver_section_links",
    schema=StructType(LINK_FIELDS),
    key=("link_id",),
    comment="Edges between sections of a document: links, text references, parent and next section",
)

SILVER_PARSE_FAILURES = TableSpec(
    name="silver_parse_failures",
    schema=StructType(
        _DOC_KEY + _DOC_SOURCE + [
            _field("reason", StringType(), False,
                   "encrypted | malformed | no_text | no_pages | too_many_pages | resource_limit | timeout | "
                   "memory_limit | worker_crashed | parser_error"),
            _field("message", StringType(), False, "what went wrong and what to do"),
            _field("failed_at", TimestampType(), False, "run time of the attempt (UTC)"),
        ]
    ),
    key=("doc_id", "parser_version"),
    comment="Bronze documents that could not be parsed, with the reason",
)

# The parse step's output, written once per run so that parsing runs once even though three
# tables are filled from it.
SILVER_PARSE_STAGING = TableSpec(
    name="silver_parse_staging",
    schema=StructType(
        [StructField(f.name, f.dataType, True, f.metadata) for f in SILVER_DOCUMENTS.schema.fields
         if f.name not in ("groups", "ocr_pages", "layout_pages")] + [
            _field("reason", StringType(), True, "failure reason, null when parsed"),
            _field("message", StringType(), True, "failure message"),
            _field("sections", ArrayType(StructType(SECTION_FIELDS), False), False, "the document's sections"),
            _field("chunks", ArrayType(StructType(CHUNK_FIELDS), False), False, "their chunks, every strategy"),
            _field("links", ArrayType(StructType(LINK_FIELDS), False), False, "the edges between its sections"),
            # last, like in silver_documents: a staging table made by an older lakerag widens
            SILVER_DOCUMENTS.schema["ocr_pages"],
            SILVER_DOCUMENTS.schema["layout_pages"],
        ]
    ),
    key=("doc_id", "parser_version"),
    comment="Scratch: the latest parse batch (internal)",
    scratch=True,
)

SILVER_SECTION_SUMMARIES = TableSpec(
    name="silver_section_summaries",
    schema=StructType([
        _field("section_id", StringType(), False, "the summarised silver section"),
        _field("model", StringType(), False, "backend:model that wrote it"),
        _field("prompt_version", StringType(), False, "summaries.prompt_version of the prompts used, + the fields when not all"),
        _field("summary_id", StringType(), False, "hash of section id, model, prompt version"),
        _field("doc_id", StringType(), False, "bronze doc_id"),
        _field("status", StringType(), False, "ok | failed (malformed output after the retries, or a backend error)"),
        _field("summary", StringType(), True, "2-4 sentence summary (ok rows)"),
        _field("title", StringType(), True, "short title written by the model"),
        _field("keywords", ArrayType(StringType(), False), True, "keywords written by the model"),
        _field("questions", ArrayType(StringType(), False), True, "questions the section answers"),
        _field("error", StringType(), True, "why a failed row failed"),
        _field("prompt_tokens", IntegerType(), False, "tokens sent, all attempts"),
        _field("completion_tokens", IntegerType(), False, "tokens generated, all attempts"),
        _field("latency_s", DoubleType(), False, "seconds spent in the model, all attempts"),
        _field("created_at", TimestampType(), False, "run time (UTC)"),
    ]),
    key=("section_id", "model", "prompt_version"),
    comment="LLM summaries and metadata of sections, one row per (section, model, prompt version)",
)

GOLD_EMBEDDINGS = TableSpec(
    name="gold_embeddings",
    schema=StructType([
        _field("item_id", StringType(), False, "the embedded item: a silver chunk_id or a summary_id"),
        _field("kind", StringType(), False, "chunk | summary (of a section, from silver_section_summaries)"),
        _field("model_name", StringType(), False, "packaged model name or model folder"),
        _field("doc_id", StringType(), False, "bronze doc_id of the item"),
        _field("section_id", StringType(), False, "silver section of the item"),
        _field("strategy", StringType(), False, "chunking strategy of the item; summary for summaries"),
        _field("model_version", StringType(), False, "package version or hash of the model's files"),
        _field("dimension", IntegerType(), False, "vector length"),
        _field("vector", ArrayType(FloatType(), False), False, "L2-normalised embedding"),
        _field("embedded_at", TimestampType(), False, "run time (UTC)"),
        _field("groups", ArrayType(StringType(), False), True, "groups allowed to read the item's document"),
    ]),
    key=("item_id", "model_name"),
    comment="One vector per (item, model); several models side by side",
)

SERVING_QUESTIONS = TableSpec(
    name="serving_questions",
    schema=StructType([
        _field("question_id", StringType(), False, "caller's id of the question"),
        _field("question", StringType(), False, "the question"),
        _field("filters", ArrayType(StringType(), False), True,
               "metadata filters such as file=debian-faq.pdf (null or empty: none)"),
        _field("submitted_at", TimestampType(), True, "when the question was added (UTC)"),
        _field("user", StringType(), True, "who asks: a user of the users file (null: anonymous, who reads "
                                           "only documents of the users group)"),
    ]),
    key=("question_id",),
    comment="Questions for the batch serving job",
)

CITATION = StructType([
    StructField("source", IntegerType(), False), StructField("title", StringType(), False),
    StructField("file_name", StringType(), False), StructField("doc_id", StringType(), False),
    StructField("section_id", StringType(), False), StructField("section", StringType(), False),
    StructField("page_start", IntegerType(), False), StructField("page_end", IntegerType(), False),
])
SERVING_ANSWERS = TableSpec(
    name="serving_answers",
    schema=StructType([
        _field("question_id", StringType(), False, "serving_questions.question_id"),
        _field("question", StringType(), False, "the question answered"),
        _field("answer", StringType(), True, "the chain's answer (null when error is set)"),
        _field("citations", ArrayType(CITATION, False), True, "sources of the answer: document, file, pages, section"),
        _field("model_uri", StringType(), False, "model URI the job was given, e.g. models:/lakerag_chain@champion"),
        _field("model_version", StringType(), False, "registered version that answered"),
        _field("index_version", StringType(), True, "index version the answer came from (folder v<gold version>, "
                                                      "or the Vector Search index); null when error is set"),
        _field("prompt_tokens", IntegerType(), True, "tokens sent to the LLM"),
        _field("completion_tokens", IntegerType(), True, "tokens the LLM wrote"),
        _field("latency_s", DoubleType(), False, "seconds to answer"),
        _field("error", StringType(), True, "why there is no answer"),
        _field("answered_at", TimestampType(), False, "run time (UTC)"),
        _field("user", StringType(), True, "who it was answered for (serving_questions.user)"),
    ]),
    key=("question_id",),
    comment="Answers of the batch serving job: one row per question, from the latest model version",
)

EVAL_QUESTIONS = TableSpec(
    name="eval_questions",
    schema=StructType([
        _field("question_id", StringType(), False, "hash of section id, generator, prompt version, seed, position"),
        _field("section_id", StringType(), False, "the silver section the pair was written from"),
        _field("doc_id", StringType(), False, "bronze doc_id of the section"),
        _field("question", StringType(), False, "generated question"),
        _field("reference_answer", StringType(), False, "generated reference answer"),
        _field("style", StringType(), False, "factual | paraphrased | multi-sentence"),
        _field("generator", StringType(), False, "backend:model that wrote it"),
        _field("prompt_version", StringType(), False, "evaluation.prompt_version"),
        _field("seed", IntegerType(), False, "evaluation.seed"),
        _field("split", StringType(), False, "train | test (by hash of question_id)"),
        _field("status", StringType(), False, "active | rejected (a filter dropped it) | retired (section gone) | "
               "candidate (from thumbs-down feedback: review, write the reference answer, then set active)"),
        _field("reason", StringType(), True, "why rejected: unsupported (support 0.xx) | duplicate of <id>"),
        _field("created_at", TimestampType(), False, "run time (UTC)"),
    ]),
    key=("question_id",),
    comment="Generated evaluation questions with reference answers, linked to their source sections",
)

EVAL_JUDGMENTS = TableSpec(
    name="eval_judgments",
    schema=StructType([
        _field("judgment_id", StringType(), False, "hash of judge model, seed and the full judge prompt"),
        _field("judge", StringType(), False, "backend:model of the judge"),
        _field("status", StringType(), False, "ok | failed (no valid JSON, or a backend error)"),
        _field("response", StringType(), True, "the judge's validated JSON (ok rows)"),
        _field("error", StringType(), True, "why the call failed"),
        _field("created_at", TimestampType(), False, "run time (UTC)"),
    ]),
    key=("judgment_id",),
    comment="Cache of LLM-judge calls: the same prompt is never judged twice",
)

ALL_TABLES: tuple[TableSpec, ...] = (
    BRONZE_DOCUMENTS, BRONZE_QUARANTINE, SILVER_DOCUMENTS, SILVER_SECTIONS, SILVER_CHUNKS, SILVER_SECTION_LINKS,
    SILVER_PARSE_FAILURES, SILVER_PARSE_STAGING, SILVER_SECTION_SUMMARIES, GOLD_EMBEDDINGS,
    SERVING_QUESTIONS, SERVING_ANSWERS, EVAL_QUESTIONS, EVAL_JUDGMENTS,
)


def arrow_schema(spec: TableSpec, fields: list[StructField] | None = None):
    """The table's schema (or just `fields` of it) as a pyarrow schema, for writers without an
    engine (delta-rs)."""
    import pyarrow as pa

    def arrow_type(data_type: DataType):
        simple = {StringType: pa.string(), IntegerType: pa.int32(), LongType: pa.int64(),
                  DoubleType: pa.float64(), FloatType: pa.float32(), BinaryType: pa.binary(),
                  TimestampType: pa.timestamp("us", tz="UTC")}
        if isinstance(data_type, ArrayType):
            return pa.list_(arrow_type(data_type.elementType))
        if isinstance(data_type, StructType):
            return pa.struct([pa.field(f.name, arrow_type(f.dataType)) for f in data_type.fields])
        if type(data_type) in simple:
            return simple[type(data_type)]
        raise TypeError(f"no arrow type for {data_type.simpleString()} in {spec.name}")

    # Nullable like the tables the engines create (see "Known engine limitations" in the README).
    return pa.schema([pa.field(f.name, arrow_type(f.dataType)) for f in fields or spec.schema.fields])


class TableSchemaMismatch(RuntimeError):
    """An existing table's columns differ from the declared schema."""


def ensure_tables(spark: SparkSession, lakehouse: Lakehouse, specs: Iterable[TableSpec] = ALL_TABLES) -> None:
    """Create missing tables and register existing local ones, adding the columns a newer
    version declares; fail if a schema has drifted otherwise."""
    for spec in specs:
        name = lakehouse.table(spec.name)
        location = lakehouse.location(spec.name)
        if location is None:
            spark.sql(
                f"CREATE TABLE IF NOT EXISTS {name} ({spec.column_ddl()}) USING delta "
                f"COMMENT {_sql_string(spec.comment)}"
            )
            added = added_columns([f.name for f in spark.table(name).schema.fields], spec)
            if added:
                spark.sql(f"ALTER TABLE {name} ADD COLUMNS ({TableSpec(spec.name, StructType(added), (), '').column_ddl()})")
        elif (Path(location) / "_delta_log").is_dir():
            # Widened with delta-rs before the engine reads it (Sail 0.7.2 has no ALTER TABLE ADD COLUMNS).
            from deltalake import DeltaTable, Schema

            table = DeltaTable(location)
            added = added_columns([f.name for f in table.schema().fields], spec)
            if added:
                table.alter.add_columns(list(Schema.from_arrow(arrow_schema(spec, added)).fields))
                log.info("table %s: added columns %s (made by an older lakerag)", name, [f.name for f in added])
            # Re-register without a column list: the Delta log is the source of truth.
            spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING delta LOCATION {_sql_string(location)}")
        else:
            spark.sql(
                f"CREATE TABLE IF NOT EXISTS {name} ({spec.column_ddl()}) USING delta "
                f"LOCATION {_sql_string(location)} COMMENT {_sql_string(spec.comment)}"
            )
        try:
            _check_schema(spark, name, spec)
        except TableSchemaMismatch:
            if not spec.scratch:
                raise
            log.info("table %s: made by an older lakerag, recreated (scratch)", name)
            spark.sql(f"DROP TABLE {name}")
            if location is not None:
                shutil.rmtree(location, ignore_errors=True)
            ensure_tables(spark, lakehouse, [dataclasses.replace(spec, scratch=False)])


def added_columns(actual: list[str], spec: TableSpec) -> list[StructField]:
    """The declared columns a table made by an older lakerag lacks: nullable ones at the end of
    the declared schema (existing rows read them as null). Any other difference is drift: []."""
    added = spec.schema.fields[len(actual):]
    if not added or spec.schema.fieldNames()[: len(actual)] != actual or not all(f.nullable for f in added):
        return []
    return added


def _check_schema(spark: SparkSession, name: str, spec: TableSpec) -> None:
    """Raise if table `name` does not have exactly the declared column names and types."""
    actual = [(f.name, f.dataType.simpleString()) for f in spark.table(name).schema.fields]
    declared = [(f.name, f.dataType.simpleString()) for f in spec.schema.fields]
    if actual != declared:
        raise TableSchemaMismatch(
            f"table {name} has columns {actual} but lakerag {spec.name} declares {declared}; "
            "move the old table away or migrate it before running this version"
        )


def merge_into(
    spark: SparkSession, table: str, rows: DataFrame, key: Iterable[str], matched: str | None = None,
    insert: bool = True,
) -> None:
    """MERGE `rows` into `table` on `key`: `matched` is the WHEN MATCHED action (an UPDATE SET
    ... or DELETE), and unmatched rows are inserted when `insert` is true."""
    view = f"lakerag_merge_{table.replace('.', '_')}"
    rows.createOrReplaceTempView(view)
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in key)
    clauses = ([f"WHEN MATCHED THEN {matched}"] if matched else []) + (
        ["WHEN NOT MATCHED THEN INSERT *"] if insert else []
    )
    spark.sql(f"MERGE INTO {table} t USING {view} s ON {on} " + " ".join(clauses))
    spark.catalog.dropTempView(view)


def sync_column(spark: SparkSession, table: str, key: Iterable[str], values: DataFrame, column: str) -> int:
    """Set `column` of `table`'s rows to the value `values` (key columns + `column`, one row per
    key; a key may match several rows of the table) gives them, writing only where it differs;
    returns how many distinct keys changed."""
    key = list(key)
    current = spark.table(table).select(*key, F.col(column).alias("current"))
    changed = (values.join(current, key)
               .filter(~F.col(column).eqNullSafe(F.col("current"))).select(*key, column).dropDuplicates(key))
    count = changed.count()
    if count:
        merge_into(spark, table, changed, key, matched=f"UPDATE SET t.`{column}` = s.`{column}`", insert=False)
    return count
