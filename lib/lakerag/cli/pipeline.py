"""Commands that build the lakehouse: ingest-bronze, build-silver, summarize-sections, embed-gold,
build-index, forget."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from lakerag.cli.common import add_index_root, add_mlflow, mlflow_experiment, index_root_of, engine_task, with_budget

log = logging.getLogger("lakerag")


def _ingest_bronze(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.ingest.bronze import ingest_bronze
    from lakerag.lakehouse.report import print_bronze_summary

    log.info("ingesting %s", args.landing)
    started = time.perf_counter()
    report = ingest_bronze(spark, lakehouse, args.landing, settings.bronze, access=settings.access)
    log.info("ingested %d files in %.1f s", report.files_seen, time.perf_counter() - started)
    print_bronze_summary(spark, lakehouse, report)
    return 0


def _build_silver(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.lakehouse.report import print_silver_summary
    from lakerag.ingest.silver import run_silver

    started = time.perf_counter()
    report = run_silver(spark, lakehouse, settings, args.engine)
    log.info("silver done in %.1f s", time.perf_counter() - started)
    print_silver_summary(spark, lakehouse, report)
    return 0


def _summarize_sections(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.enrich.summaries import run_params, run_summaries
    from lakerag.tracking import log_task_run

    settings = with_budget(settings, "summaries", args.max_sections)
    started = time.perf_counter()
    report = run_summaries(spark, lakehouse, settings)
    log.info("summaries done in %.1f s", time.perf_counter() - started)
    print(f"summaries written: {report.written or 0}  removed: {report.removed}  "
          f"tokens in/out: {report.prompt_tokens}/{report.completion_tokens}  "
          f"qualifying sections left for later runs: {report.waiting}")
    mlflow_experiment(args)
    log_task_run("summarize-sections", run_params(settings), report.metrics())
    if not report.changed:
        print("no changes: silver_section_summaries left as it was")
    return 0


def _embed_gold(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.enrich.embeddings import run_gold

    started = time.perf_counter()
    report = run_gold(spark, lakehouse, settings)
    log.info("gold done in %.1f s", time.perf_counter() - started)
    for model in report.embedded:
        print(f"{model}: embedded {report.embedded[model]}, removed {report.removed[model]}")
    if report.relabelled:
        print(f"vectors re-labelled with their document's groups (not embedded again): {report.relabelled}")
    if not report.changed:
        print("no changes: gold_embeddings left as it was")
    return 0


def _build_index(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.enrich.index_build import build_index

    report = build_index(spark, lakehouse, settings, index_root_of(args))
    print(f"{'built' if report.built else 'up to date'}: {report.folder} ({report.vectors} vectors)")
    if args.vector_search_endpoint:
        from lakerag.enrich.vector_search_sync import sync_vector_search

        outcome = sync_vector_search(spark, lakehouse, settings, args.vector_search_endpoint)
        print(f"vector search index {outcome}")
    return 0


def _forget(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.lakehouse.forget import NoSuchDocument, forget

    try:
        report = forget(spark, lakehouse, settings, args.document, index_root_of(args),
                        delete_source=not args.keep_source, dry_run=args.dry_run,
                        experiment_ids=[mlflow_experiment(args)])
    except NoSuchDocument as err:
        print(f"lakerag forget: {err}", file=sys.stderr)
        return 2
    verb = "would remove" if args.dry_run else "removed"
    print(f"document {args.document!r}: doc_id {', '.join(report.doc_ids) or '(none parsed)'}")
    print(f"{'table':28} rows {verb}")
    for table, count in report.rows.items():
        print(f"{table:28} {count}")
    for folder in report.index_folders:
        print(f"index version {verb}: {folder}")
    for path in report.files:
        print(f"landing file {verb}: {path}")
    traces = sum(len(ids) for ids in report.traces.values())
    print(f"MLflow traces {verb} (their retrieval returned the document): {traces}")
    if report.vacuumed:
        print(f"older table versions purged (VACUUM, retention 0): {', '.join(report.vacuumed)}")
    for note in report.notes:
        print(f"note: {note}")
    return 0


def add_commands(tasks: argparse._SubParsersAction) -> None:
    """Add the pipeline commands to the `lakerag` parser."""
    ingest, _ = engine_task(
        tasks, "ingest-bronze", _ingest_bronze,
        "read the landing folder into bronze_documents / bronze_quarantine",
        "Read every file under --landing (recursively; hidden files skipped) with the "
                    "binaryFile source. Readable PDFs are merged into bronze_documents keyed by "
                    "(path, sha256 of the bytes); anything else goes to bronze_quarantine with a "
                    "reason. Re-running over unchanged files writes nothing; changed files supersede "
                    "their old version; removed files become 'deleted' tombstones. Each document is "
                    "labelled with the groups allowed to read it (access.rules: landing path prefix -> "
                    "groups); a change of rules re-labels without reading the files again.",
    )
    ingest.add_argument("--landing", default=os.environ.get("LAKERAG_LANDING", "data/corpus"),
                        help="folder or UC volume path with the PDFs (default %(default)s; env LAKERAG_LANDING)")

    engine_task(
        tasks, "build-silver", _build_silver,
        "parse bronze PDFs into silver_documents / silver_sections / silver_chunks",
        "Parse every active bronze document not yet parsed by this parser version "
                    "into sections (from the PDF outline, else from font sizes) and chunks for "
                    "each strategy in silver.strategies. Documents that cannot be parsed "
                    "(encrypted, malformed, no text) land in silver_parse_failures with a reason. "
                    "Rows of superseded or deleted documents are removed; a changed chunking "
                    "setting rebuilds only that strategy. Passwords for encrypted PDFs are read "
                    "from LAKERAG_PDF_PASSWORDS (one per line).",
    )

    summaries, where = engine_task(
        tasks, "summarize-sections", _summarize_sections,
        "write LLM summaries, titles, keywords and questions of silver sections",
        "Summarise the silver sections that summaries.* admits (long enough, of the listed levels, "
        "longest first, at most max_sections a run) with llm.*, and store the validated JSON "
        "(summary, title, keywords, questions) in silver_section_summaries, keyed by section, "
        "model and prompt version. Malformed output is asked for again, then recorded as a failed "
        "row. Shows progress with an estimate; prints tokens in/out and logs the run's totals "
        "(sections by status, tokens in/out) to MLflow.",
    )
    add_mlflow(where)
    summaries.add_argument("--max-sections", type=int, default=None,
                           help="sections this run may summarise (overrides summaries.max_sections; 0 = all)")

    engine_task(
        tasks, "embed-gold", _embed_gold,
        "embed silver chunks into gold_embeddings",
        "Embed the chunks of gold.strategies with models.embedding (and gold.extra_models) "
                    "using sentence-transformers from packaged weights or a model folder. Only chunks "
                    "without a vector from the current model version are embedded; vectors of chunks "
                    "that left silver are removed; vectors whose document's groups changed (access.rules) "
                    "are re-labelled.",
    )

    index, where = engine_task(
        tasks, "build-index", _build_index,
        "build the FAISS + BM25 index artifacts from gold (and sync Vector Search)",
        "Build the retrieval index of retrieval.strategy's chunks from gold_embeddings into "
                    "<index-root>/<model>__<strategy>/v<gold version>/, once per gold table version. "
                    "With --vector-search-endpoint (Databricks), also create or sync a Delta Sync "
                    "Vector Search index over the gold vectors.",
    )
    add_index_root(where)
    index.add_argument("--vector-search-endpoint", default=None,
                       help="Databricks Vector Search endpoint to create/sync the index on")

    forget_, where = engine_task(
        tasks, "forget", _forget,
        "remove one document everywhere now (an erasure request), and report what went",
        "Delete every row made from DOCUMENT (all versions of its file): bronze, quarantine, silver "
        "documents, sections, chunks and failures, summaries, gold vectors, eval questions and the "
        "serving answers that cite it; rebuild the index and delete the index versions that held it "
        "(served chains follow the rebuilt index); delete the MLflow traces in --experiment whose "
        "retrieval returned it (with their feedback); "
        "delete the landing file (else the next ingest brings it back); then VACUUM the local tables "
        "touched with zero retention, so time travel cannot bring the rows back either. The scheduled "
        "pipeline does the same for a deleted file on its next run, except VACUUM. Run it while no "
        "pipeline job is writing: zero-retention VACUUM removes files a writer has not committed yet.",
    )
    add_index_root(where)
    add_mlflow(where)
    forget_.add_argument("document", help="a doc_id, a landing path, or a file name")
    forget_.add_argument("--dry-run", action="store_true", help="report what would be removed; change nothing")
    forget_.add_argument("--keep-source", action="store_true", help="leave the landing file in place")
