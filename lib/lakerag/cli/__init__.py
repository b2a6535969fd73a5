"""`lakerag` command line: one subcommand per workflow task, shared engine/table flags.

The scripts in jobs/ call `main` with their subcommand, so `spark-submit jobs/<task>.py`, a
Databricks `spark_python_task` and the `lakerag` console script (`python_wheel_task`) all run
the same code.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from lakerag import __version__

log = logging.getLogger("lakerag")
DEFAULT_CONF = Path("conf/pipeline.yml")


def _add_common(parser: argparse.ArgumentParser, engine: bool = True) -> argparse._ArgumentGroup:
    """Flags every task takes: which engine, which catalog/schema, where local data lives."""
    from lakerag.lakehouse.engine import ENGINES, default_engine

    where = parser.add_argument_group("where the pipeline runs (databricks.yml passes these)")
    if engine:
        where.add_argument("--engine", choices=ENGINES, default=default_engine(),
                           help="sail: embedded local engine (default off Databricks); databricks: the "
                                "runtime's session with Unity Catalog; spark: classic Spark + delta-spark "
                                "(needs Maven). Env: LAKERAG_ENGINE")
    where.add_argument("--catalog", default=os.environ.get("LAKERAG_CATALOG", "lakerag"),
                       help="catalog of the tables (default %(default)s; env LAKERAG_CATALOG)")
    where.add_argument("--schema", default=os.environ.get("LAKERAG_SCHEMA", "dev"),
                       help="schema of the tables (default %(default)s; env LAKERAG_SCHEMA)")
    where.add_argument("--lake-root", type=Path, default=Path(os.environ.get("LAKERAG_LAKE_ROOT", "lakehouse")),
                       help="local folder for Delta tables, ignored on databricks "
                            "(default %(default)s; env LAKERAG_LAKE_ROOT)")
    where.add_argument("--conf", type=Path, default=DEFAULT_CONF if DEFAULT_CONF.is_file() else None,
                       help="pipeline settings YAML (default conf/pipeline.yml when present, "
                            "else built-in defaults)")
    where.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                       help="override one setting of --conf, e.g. --set llm.backend=databricks "
                            "--set llm.model=my-endpoint (repeatable; values are YAML)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only warnings; still print the summary")
    return where


def _add_index_root(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--index-root", type=Path, default=os.environ.get("LAKERAG_INDEX_ROOT"),
                       help="folder of index artifacts (a UC volume path on Databricks); default "
                            "<lake-root>/indexes/<catalog>/<schema>; env LAKERAG_INDEX_ROOT")


def _add_mlflow(group: argparse._ArgumentGroup) -> None:
    from lakerag.tracking import DEFAULT_EXPERIMENT

    group.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                       help="MLflow tracking store (default sqlite:///<lake-root>/mlflow.db; "
                            "'databricks' on Databricks; env MLFLOW_TRACKING_URI)")
    group.add_argument("--registry-uri", default=os.environ.get("MLFLOW_REGISTRY_URI"),
                       help="MLflow model registry (default: the tracking store; 'databricks-uc' for "
                            "Unity Catalog; env MLFLOW_REGISTRY_URI)")
    group.add_argument("--experiment", default=os.environ.get("LAKERAG_EXPERIMENT", DEFAULT_EXPERIMENT),
                       help="MLflow experiment (a workspace path such as /Shared/lakerag on Databricks; "
                            "default %(default)s; env LAKERAG_EXPERIMENT)")


def _mlflow_experiment(args: argparse.Namespace) -> str:
    """Configure MLflow from the flags and activate the experiment; returns its id."""
    from lakerag.tracking import configure_mlflow, use_experiment

    configure_mlflow(args.tracking_uri, args.registry_uri, args.lake_root)
    return use_experiment(args.experiment, args.lake_root)


def _add_model(group: argparse._ArgumentGroup, alias: str | None) -> None:
    group.add_argument("--model-name", default=os.environ.get("LAKERAG_MODEL_NAME"),
                       help="registered model (default lakerag_chain; <catalog>.<schema>.lakerag_chain with "
                            "--registry-uri databricks-uc; env LAKERAG_MODEL_NAME)")
    if alias is not None:  # evaluate takes several (--aliases) instead
        group.add_argument("--alias", default=alias, help="registry alias (default %(default)s)")


def _model_name(args: argparse.Namespace) -> str:
    from lakerag.chain.registry import default_model_name

    return args.model_name or default_model_name(args.catalog, args.schema, args.registry_uri == "databricks-uc")


def _model_uri(args: argparse.Namespace) -> str:
    """--model when given, else models:/<model name>@<alias>."""
    return args.model or f"models:/{_model_name(args)}@{args.alias}"


def _index_root(args: argparse.Namespace) -> Path:
    if args.index_root:
        return Path(args.index_root)
    return Path(args.lake_root) / "indexes" / args.catalog / args.schema


def _run_with_tables(args: argparse.Namespace, task: Callable[..., int]) -> int:
    """Start the engine, make sure the tables exist, run `task(spark, lakehouse, settings, args)`."""
    from lakerag.lakehouse.engine import Lakehouse, spark_session
    from lakerag.settings import load_settings
    from lakerag.lakehouse.tables import ensure_tables

    settings = load_settings(args.conf, args.overrides)
    lakehouse = Lakehouse(args.catalog, args.schema, None if args.engine == "databricks" else args.lake_root)
    started = time.perf_counter()
    log.info("starting %s engine for %s.%s", args.engine, lakehouse.catalog, lakehouse.schema)
    with spark_session(args.engine, lakehouse) as spark:
        log.info("engine ready in %.2f s", time.perf_counter() - started)
        ensure_tables(spark, lakehouse)
        return task(spark, lakehouse, settings, args)


def _ingest_bronze(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.ingest.bronze import ingest_bronze
    from lakerag.lakehouse.report import print_bronze_summary

    log.info("ingesting %s", args.landing)
    started = time.perf_counter()
    report = ingest_bronze(spark, lakehouse, args.landing, settings.bronze)
    log.info("ingested %d files in %.1f s", report.files_seen, time.perf_counter() - started)
    print_bronze_summary(spark, lakehouse, report)
    return 0


def _with_budget(settings, section: str, max_sections: int | None):
    """Settings with <section>.max_sections replaced by --max-sections when it is given."""
    from lakerag.settings import apply_overrides

    return settings if max_sections is None else apply_overrides(settings, [f"{section}.max_sections={max_sections}"])


def _summarize_sections(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.enrich.summaries import run_params, run_summaries
    from lakerag.tracking import log_task_run

    settings = _with_budget(settings, "summaries", args.max_sections)
    started = time.perf_counter()
    report = run_summaries(spark, lakehouse, settings)
    log.info("summaries done in %.1f s", time.perf_counter() - started)
    print(f"summaries written: {report.written or 0}  removed: {report.removed}  "
          f"tokens in/out: {report.prompt_tokens}/{report.completion_tokens}  "
          f"qualifying sections left for later runs: {report.waiting}")
    _mlflow_experiment(args)
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
    if not report.changed:
        print("no changes: gold_embeddings left as it was")
    return 0


def _build_index(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.enrich.index_build import build_index

    report = build_index(spark, lakehouse, settings, _index_root(args))
    print(f"{'built' if report.built else 'up to date'}: {report.folder} ({report.vectors} vectors)")
    if args.vector_search_endpoint:
        from lakerag.enrich.vector_search_sync import sync_vector_search

        outcome = sync_vector_search(spark, lakehouse, settings, args.vector_search_endpoint)
        print(f"vector search index {outcome}")
    return 0


def _search(args: argparse.Namespace) -> int:
    """Query the latest index: plain Python, no engine."""
    from lakerag.retrieval.index_files import latest_index
    from lakerag.retrieval.retriever import Filters, Retriever
    from lakerag.settings import load_settings

    settings = load_settings(args.conf, args.overrides)
    try:
        filters = Filters.parse(args.filter)
        folder = args.index or latest_index(_index_root(args), settings)
    except (ValueError, FileNotFoundError) as err:
        print(f"lakerag search: {err}", file=sys.stderr)
        return 2
    retriever = Retriever.from_settings(folder, settings)
    hits = retriever.search(args.query, k=args.k, mode=args.mode, filters=filters, rerank=not args.no_rerank)
    if not hits:
        print("no hits")
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank}. [{hit.score:.3f}] {hit.citation()}")
        print(f"   {' '.join(hit.text.split())[:300]}")
    return 0


def _register_chain(args: argparse.Namespace) -> int:
    """Log, check, register the chain (reading the newest index under the index root) and set the
    alias: no engine needed."""
    from lakerag.chain.registry import register_chain
    from lakerag.retrieval.index_files import latest_index
    from lakerag.settings import load_settings

    settings = load_settings(args.conf, args.overrides)
    # --index names one version folder; the chain follows the newest version beside it
    root = Path(args.index).resolve().parents[1] if args.index else _index_root(args)
    try:
        folder = latest_index(root, settings)
    except FileNotFoundError as err:
        print(f"lakerag register-chain: {err}", file=sys.stderr)
        return 2
    _mlflow_experiment(args)
    started = time.perf_counter()
    done = register_chain(settings, root, _model_name(args), args.alias, args.check_question)
    log.info("registered in %.1f s", time.perf_counter() - started)
    print(f"registered {done.name} version {done.version} as @{done.alias} (run {done.run_id}); it answers from "
          f"the newest index under {root} (now {folder.name}), followed while it runs")
    print(f"check question: {args.check_question}")
    _print_answer(done.check)
    return 0


def _print_answer(answer: dict) -> None:
    """The checked answer, its unsupported sentences, and the verified citations with quotes."""
    print(f"answer: {answer['answer']}")
    claims = [s for s in answer["sentences"] if s["claim"]]
    for sentence in claims:
        if not sentence["supported"]:
            print(f"  unsupported by the sources: {sentence['text']}")
    if answer["abstained"]:
        print("closest sources:" if answer["closest_sources"] else "no source was close enough")
        for citation in answer["closest_sources"]:
            print(f"  [{citation['source']}] {citation['citation']}")
    else:
        verified = sum(s["supported"] for s in claims)
        print(f"sources ({verified} of {len(claims)} sentences verified against them):")
        for citation in answer["citations"]:
            print(f"  [{citation['source']}] {citation['citation']}")
            for quoted in citation["quotes"]:
                print(f"      p. {quoted['page']}: \"{quoted['quote']}\"")
    index = answer.get("index") or {}
    print(f"index {index.get('version')} ({index.get('backend')}), trace {answer.get('trace_id')}")
    usage = answer["usage"]
    first = f", first token {answer['first_token_s']:.1f} s" if answer.get("first_token_s") is not None else ""
    print(f"({usage['prompt_tokens']} tokens in, {usage['completion_tokens']} out{first}, {answer['latency_s']:.1f} s)")


def _ask(args: argparse.Namespace) -> int:
    """Ask one question through a registered chain, printing the answer with citations."""
    from lakerag.chain.rag import BadRequest
    from lakerag.chain.registry import load_chain
    from lakerag.chain.responses import agent_request, answer_of

    _mlflow_experiment(args)  # the answer's trace goes to this experiment
    uri = _model_uri(args)
    log.info("loading %s", uri)
    model = load_chain(uri)
    print(f"model: {uri}\nquestion: {args.question}")
    try:
        streaming = False
        for event in model.predict_stream(agent_request([{"role": "user", "content": args.question}], args.filter)):
            if event.get("type") == "response.output_text.delta":
                if not streaming:
                    print("draft: ", end="")
                    streaming = True
                print(event["delta"], end="", flush=True)
            elif event.get("type") == "response.output_item.done":
                answer = answer_of(event)
    except BadRequest as err:
        print(f"lakerag ask: {err}", file=sys.stderr)
        return 2
    if streaming:
        print("\n(checking each sentence against the sources)")
    _print_answer(answer)
    return 0


def _serve(args: argparse.Namespace) -> int:
    """Serve a registered chain over HTTP until interrupted."""
    from lakerag.lakehouse.engine import Lakehouse
    from lakerag.lakehouse.tables import ACTIVE, BRONZE_DOCUMENTS
    from lakerag.serving.documents import PdfStore
    from lakerag.serving.server import serve
    from lakerag.settings import load_settings

    _mlflow_experiment(args)  # traces and feedback go to this experiment
    bronze = Lakehouse(args.catalog, args.schema, args.lake_root).location(BRONZE_DOCUMENTS.name)
    pdfs = PdfStore(bronze, ACTIVE) if Path(bronze).is_dir() else None
    if pdfs is None:
        log.warning("no bronze table at %s: the chat page cannot open cited PDFs", bronze)
    serve(_model_uri(args), load_settings(args.conf, args.overrides).chain, args.host, args.port, pdfs)
    return 0


def _serve_batch(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.lakehouse.batch_serving import run_batch
    from lakerag.tracking import configure_mlflow

    configure_mlflow(args.tracking_uri, args.registry_uri, args.lake_root)
    started = time.perf_counter()
    report = run_batch(spark, lakehouse, _model_uri(args))
    log.info("batch done in %.1f s", time.perf_counter() - started)
    print(f"model version {report.model_version}: answered {report.answered}, failed {report.failed}, "
          f"already answered {report.skipped}")
    return 0


def _generate_eval_set(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.evaluation.question_sets import candidates_from_feedback, run_generation, thumbs_down

    settings = _with_budget(settings, "evaluation", args.max_sections)
    started = time.perf_counter()
    report = run_generation(spark, lakehouse, settings)
    log.info("question generation done in %.1f s", time.perf_counter() - started)
    print(f"question pairs written: {report.statuses or 0}  sections without valid output: "
          f"{report.failed_sections}  retired: {report.retired}  erased: {report.erased}  tokens in/out: "
          f"{report.prompt_tokens}/{report.completion_tokens}  sections left for later runs: {report.waiting}")
    candidates = candidates_from_feedback(spark, lakehouse, thumbs_down([_mlflow_experiment(args)]))
    print(f"candidate questions from thumbs-down feedback (status candidate, to review): {candidates}")
    return 0


def _evaluate(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from lakerag.chain.registry import resolve_model
    from lakerag.evaluation.jobs import NoQuestions, run_evaluation

    experiment_id = _mlflow_experiment(args)
    name = _model_name(args)
    for alias in args.aliases:
        try:
            version, uri = resolve_model(f"models:/{name}@{alias}")
        except MlflowException:
            print(f"{name} has no @{alias}: skipped")
            continue
        for eval_set in args.eval_set:
            try:
                result = run_evaluation(spark, lakehouse, settings, uri, version, eval_set,
                                        experiment_id, not args.no_judge, answers=not args.retrieval_only)
            except NoQuestions as err:
                print(f"@{alias} on {eval_set}: skipped, {err}")
                continue
            if result is None:
                print(f"@{alias} (version {version}) already evaluated on these {eval_set} questions")
                continue
            print(f"@{alias} (version {version}) on {eval_set}: {len(result['table'])} questions, run {result['run_id']}")
            for metric, s in result["summary"].items():
                if s.nan_rate == 1.0:
                    continue  # not measured in this mode
                print(f"  {metric:18} {s.mean:6.3f}  [{s.ci_low:.3f}, {s.ci_high:.3f}]  NaN {s.nan_rate:.0%}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from lakerag.evaluation.jobs import promote
    from lakerag.settings import load_settings

    settings = load_settings(args.conf, args.overrides)
    promoted, explanation = promote(_model_name(args), _mlflow_experiment(args), args.eval_set,
                                    settings.evaluation.gate_metrics)
    print(explanation)
    return 0 if promoted else 1


def _build_silver(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.lakehouse.report import print_silver_summary
    from lakerag.ingest.silver import run_silver

    started = time.perf_counter()
    report = run_silver(spark, lakehouse, settings, args.engine)
    log.info("silver done in %.1f s", time.perf_counter() - started)
    print_silver_summary(spark, lakehouse, report)
    return 0


def _engine_task(tasks, name: str, task: Callable[..., int], summary: str, description: str):
    """Add a subcommand that runs `task` on the engine; returns it and its location flag group."""
    command = tasks.add_parser(name, help=summary, description=description)
    command.set_defaults(task=task)
    return command, _add_common(command)


def _evaluate_finetuned(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.evaluation.jobs import NoQuestions
    from lakerag.finetune.gate import RERANKED, TUNED, NoFinetuneRun, evaluate_finetuned, table_lines
    from lakerag.retrieval.index_files import latest_index
    from lakerag.chain.registry import default_model_name

    experiment_id = _mlflow_experiment(args)
    unity_catalog = args.registry_uri == "databricks-uc"
    names = {TUNED: args.embedding_model_name or default_model_name(args.catalog, args.schema, unity_catalog,
                                                                    "lakerag_embedding"),
             RERANKED: args.reranker_model_name or default_model_name(args.catalog, args.schema, unity_catalog,
                                                                      "lakerag_reranker")}
    try:
        report = evaluate_finetuned(spark, lakehouse, settings, latest_index(_index_root(args), settings),
                                    experiment_id, names, args.run_id)
    except (NoFinetuneRun, NoQuestions, FileNotFoundError) as err:
        print(f"lakerag evaluate-finetuned: {err}", file=sys.stderr)
        return 2
    print(f"fine-tuning run {report.finetune_run_id} against models.embedding={settings.models.embedding} and "
          f"retrieval.reranker={settings.retrieval.reranker}; MLflow run {report.run_id}")
    for name, table in report.tables.items():
        print(f"\n{name} ({report.questions[name]} questions)")
        print("\n".join(table_lines(table)))
    print()
    for system, (better, why) in report.verdicts.items():
        if system in report.registered:
            outcome = f"registered as {names[system]} version {report.registered[system]} @champion"
        else:
            outcome = report.skipped[system] if better else "not promoted"
        print(f"{system}: {outcome}; {why}")
    folder = Path(report.output) if report.output else Path("<the finetune --output folder>")
    if report.verdicts[TUNED][0]:
        print(f"to use the embedding model: --set models.embedding={folder / 'embedding'}, then embed-gold, "
              "build-index, register-chain")
    if report.verdicts[RERANKED][0]:
        print(f"to use the reranker: --set retrieval.reranker=cross-encoder --set retrieval.cross_encoder={folder / 'reranker'}")
    return 0


def _forget(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.lakehouse.forget import NoSuchDocument, forget

    try:
        report = forget(spark, lakehouse, settings, args.document, _index_root(args),
                        delete_source=not args.keep_source, dry_run=args.dry_run)
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
    if report.vacuumed:
        print(f"older table versions purged (VACUUM, retention 0): {', '.join(report.vacuumed)}")
    for note in report.notes:
        print(f"note: {note}")
    return 0


def _finetune(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.finetune.train import NotEnoughPairs, run_finetune
    from lakerag.retrieval.index_files import latest_index

    _mlflow_experiment(args)
    output = Path(args.output) if args.output else Path(args.lake_root) / "finetuned" / args.catalog / args.schema
    try:
        report = run_finetune(spark, lakehouse, settings, latest_index(_index_root(args), settings), output)
    except NotEnoughPairs as err:
        print(f"lakerag finetune-embeddings: {err}", file=sys.stderr)
        return 2
    print(f"trained on {report.pairs} pairs ({report.triplets} triplets with hard negatives); MLflow run {report.run_id}")
    for name, value in report.metrics.items():
        print(f"  {name}: {value}")
    print(f"embedding model: {report.embedding_folder}  (use: --set models.embedding=<folder>, or add it to "
          "gold.extra_models to embed beside the base model)")
    print(f"reranker: {report.reranker_folder}  (use: --set retrieval.reranker=cross-encoder "
          "--set retrieval.cross_encoder=<folder>)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `lakerag` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="lakerag",
        description="Lakehouse RAG pipeline: PDFs -> bronze/silver/gold Delta tables -> RAG chain.",
    )
    parser.add_argument("--version", action="version", version=f"lakerag {__version__}")
    tasks = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest, _ = _engine_task(
        tasks, "ingest-bronze", _ingest_bronze,
        "read the landing folder into bronze_documents / bronze_quarantine",
        "Read every file under --landing (recursively; hidden files skipped) with the "
                    "binaryFile source. Readable PDFs are merged into bronze_documents keyed by "
                    "(path, sha256 of the bytes); anything else goes to bronze_quarantine with a "
                    "reason. Re-running over unchanged files writes nothing; changed files supersede "
                    "their old version; removed files become 'deleted' tombstones.",
    )
    ingest.add_argument("--landing", default=os.environ.get("LAKERAG_LANDING", "data/corpus"),
                        help="folder or UC volume path with the PDFs (default %(default)s; env LAKERAG_LANDING)")

    _engine_task(
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

    summaries, where = _engine_task(
        tasks, "summarize-sections", _summarize_sections,
        "write LLM summaries, titles, keywords and questions of silver sections",
        "Summarise the silver sections that summaries.* admits (long enough, of the listed levels, "
        "longest first, at most max_sections a run) with llm.*, and store the validated JSON "
        "(summary, title, keywords, questions) in silver_section_summaries, keyed by section, "
        "model and prompt version. Malformed output is asked for again, then recorded as a failed "
        "row. Shows progress with an estimate; prints tokens in/out and logs the run's totals "
        "(sections by status, tokens in/out) to MLflow.",
    )
    _add_mlflow(where)
    summaries.add_argument("--max-sections", type=int, default=None,
                           help="sections this run may summarise (overrides summaries.max_sections; 0 = all)")

    _engine_task(
        tasks, "embed-gold", _embed_gold,
        "embed silver chunks into gold_embeddings",
        "Embed the chunks of gold.strategies with models.embedding (and gold.extra_models) "
                    "using sentence-transformers from packaged weights or a model folder. Only chunks "
                    "without a vector from the current model version are embedded; vectors of chunks "
                    "that left silver are removed.",
    )

    index, where = _engine_task(
        tasks, "build-index", _build_index,
        "build the FAISS + BM25 index artifacts from gold (and sync Vector Search)",
        "Build the retrieval index of retrieval.strategy's chunks from gold_embeddings into "
                    "<index-root>/<model>__<strategy>/v<gold version>/, once per gold table version. "
                    "With --vector-search-endpoint (Databricks), also create or sync a Delta Sync "
                    "Vector Search index over the gold vectors.",
    )
    _add_index_root(where)
    index.add_argument("--vector-search-endpoint", default=None,
                       help="Databricks Vector Search endpoint to create/sync the index on")

    search = tasks.add_parser(
        "search",
        help="query the latest index and print ranked hits with citations",
        description="Search the latest index for --conf's model and strategy. Modes: dense, bm25, "
                    "hybrid (reciprocal rank fusion). Hits are sections (best chunk each) with "
                    "title, file, pages and heading path.",
    )
    search.add_argument("query", help="the question or keywords")
    search.add_argument("-k", type=int, default=5, help="hits to print (default %(default)s)")
    search.add_argument("--mode", choices=("dense", "bm25", "hybrid"), default="hybrid")
    search.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="doc=ID, file=NAME, 'section=Title > Subtitle', pages=3-9, tag:language=en "
                             "(repeatable; all must hold)")
    search.add_argument("--no-rerank", action="store_true", help="skip retrieval.reranker")
    search.add_argument("--index", type=Path, default=None, help="an index folder (default: the latest)")
    _add_index_root(_add_common(search, engine=False))
    search.set_defaults(runner=_search)

    register = tasks.add_parser(
        "register-chain",
        help="log the RAG chain to MLflow, check it, register a version and set an alias",
        description="Log the chain (lakerag/chain_model.py, an MLflow model from code) with the "
                    "settings from --conf, the latest index as an artifact, the lakerag code, an "
                    "input example and a signature; reload the logged model and answer "
                    "--check-question; then register the version and point --alias at it.",
    )
    where = _add_common(register, engine=False)
    _add_index_root(where)
    _add_mlflow(where)
    _add_model(where, alias="challenger")
    register.add_argument("--index", type=Path, default=None,
                          help="an index version folder; the chain follows the newest version beside it "
                               "(default: the newest under --index-root). The index is not copied into the "
                               "model: the served chain reads it where it is and follows new versions "
                               "(retrieval.index_refresh_s)")
    register.add_argument("--check-question", default="How can I keep my Debian system current?",
                          help="question the reloaded model must answer before it is registered")
    register.set_defaults(runner=_register_chain)

    ask = tasks.add_parser("ask", help="ask a registered chain one question; prints the answer and citations",
                           description="Load models:/<model-name>@<alias> (or --model) and answer QUESTION.")
    ask.add_argument("question")
    ask.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                     help="metadata filter, as for search (repeatable)")
    where = _add_common(ask, engine=False)
    _add_mlflow(where)
    _add_model(where, alias="champion")
    where.add_argument("--model", default=None, help="any MLflow model URI (overrides --model-name/--alias)")
    ask.set_defaults(runner=_ask)

    server = tasks.add_parser(
        "serve", help="serve a registered chain over HTTP: the chat page at /, POST /invocations, GET /health",
        description="Load the chain once and answer POST /invocations in MLflow's ResponsesAgent shape "
                    "({\"input\": [...], \"custom_inputs\": {\"filters\": [...]}}, \"stream\": true for "
                    "events), or the earlier {\"messages\": [...], \"filters\": [...]} and MLflow "
                    "dataframe_records / inputs shapes. Request limits come from chain.* in --conf. Every "
                    "request is traced to --experiment. The chat page at / asks the chain, lists each "
                    "answer's citations (opening the cited PDF page from bronze_documents under "
                    "--lake-root/--catalog/--schema), filters by the served index's documents and "
                    "sections, and stores thumbs up/down with a comment as feedback on the answer's trace.")
    where = _add_common(server, engine=False)
    _add_mlflow(where)
    _add_model(where, alias="champion")
    where.add_argument("--model", default=None, help="any MLflow model URI (overrides --model-name/--alias)")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    server.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")
    server.set_defaults(runner=_serve)

    generate, where = _engine_task(
        tasks, "generate-eval-set", _generate_eval_set,
        "write question / reference-answer pairs from silver sections into eval_questions",
        "With llm.* and the seed examples of evaluation.*, write one pair per style for each "
        "section the budget admits (evaluation.min_chars, max_sections, seeded order); pairs whose "
        "answer is not supported by the section or whose question nearly repeats a kept one are "
        "stored as rejected with the reason; pairs of sections that left silver are retired, and "
        "pairs of documents whose file was deleted are erased. Thumbs-down feedback from the chat page "
        "(assessments on the answers' traces in --experiment) becomes questions with status candidate, for review. "
        "Sections that already have pairs from this generator and prompt version are skipped.",
    )
    generate.add_argument("--max-sections", type=int, default=None,
                          help="sections this run may use (overrides evaluation.max_sections; 0 = all)")
    _add_mlflow(where)  # thumbs-down feedback is read from this experiment's traces

    evaluate_, where = _engine_task(
        tasks, "evaluate", _evaluate,
        "evaluate registered chain versions on the question sets and log results to MLflow",
        "For each --aliases version: answer the test split of eval_questions (--eval-set generated) "
        "and/or the Debian FAQ's own questions (debian-faq), compute recall@k, MRR, nDCG@k, context "
        "precision, citation accuracy and (unless --no-judge) faithfulness, answer relevance, context "
        "recall and answer correctness with the LLM judge, with bootstrap intervals; log metrics, "
        "the per-question table and report.html to MLflow. A version already evaluated on the same "
        "questions is skipped.",
    )
    _add_mlflow(where)
    _add_model(where, alias=None)
    evaluate_.add_argument("--aliases", nargs="+", default=["challenger", "champion"],
                           help="aliases whose versions to evaluate (default: challenger champion)")
    evaluate_.add_argument("--eval-set", nargs="+", choices=("generated", "debian-faq"), default=["generated"])
    evaluate_.add_argument("--no-judge", action="store_true", help="no LLM judge: judged metrics are NaN")
    evaluate_.add_argument("--retrieval-only", action="store_true",
                           help="run only the logged chain's retriever (no answers, no LLM calls): "
                                "retrieval metrics only, fast")

    promote_ = tasks.add_parser(
        "promote", help="move @champion to @challenger if the evaluation gate passes (exit 1 if not)",
        description="Compare the latest evaluations of @challenger and @champion on --eval-set: the "
                    "challenger is refused if on any of evaluation.gate_metrics its interval lies wholly "
                    "below the champion's. Prints the comparison table.")
    where = _add_common(promote_, engine=False)
    _add_mlflow(where)
    _add_model(where, alias="challenger")
    promote_.add_argument("--eval-set", choices=("generated", "debian-faq"), default="generated")
    promote_.set_defaults(runner=_promote)

    finetune_, where = _engine_task(
        tasks, "finetune-embeddings", _finetune,
        "fine-tune the embedding model and train a reranker on the generated train split",
        "Train on the active train-split questions of eval_questions (never the test split), each with "
        "its section: the embedding model with in-batch negatives plus hard negatives mined from the "
        "latest index's sections (multiple-negatives ranking loss), and a cross-encoder reranker from "
        "finetune.reranker_base with a fresh one-logit head (binary cross-entropy). Saves both under "
        "--output and logs them with their training metrics to MLflow. Epochs, batch size and the "
        "rest come from finetune.* in --conf.",
    )
    _add_index_root(where)
    _add_mlflow(where)
    finetune_.add_argument("--output", default=None,
                           help="folder for the trained models (default <lake-root>/finetuned/<catalog>/<schema>)")

    finetuned_eval, where = _engine_task(
        tasks, "evaluate-finetuned", _evaluate_finetuned,
        "compare a fine-tuning run's models with the base; register each one only if it is better",
        "Section retrieval over the latest index's sections on the held-out split (the generated test "
        "split) and the Debian FAQ's questions: the base vs the fine-tuned embedding model, and the "
        "base model's top retrieval.rerank_candidates reordered by the trained reranker vs by the "
        "configured retrieval.reranker. Prints recall@5 and nDCG@10 with bootstrap intervals and each "
        "system's paired difference to what it would replace, and logs them to MLflow. A model is "
        "registered (alias @champion) only if, with at least finetune.min_held_out held-out questions, "
        "its held-out nDCG@10 difference interval lies above zero and on no set is a difference "
        "interval below zero. On Unity Catalog a better model is reported, not registered (it is a "
        "plain folder, not an MLflow model with a signature).",
    )
    _add_index_root(where)
    _add_mlflow(where)
    finetuned_eval.add_argument("--run-id", default=None,
                                help="the fine-tuning MLflow run to evaluate (default: the newest finished one in "
                                     "the experiment)")
    finetuned_eval.add_argument("--embedding-model-name", default=None,
                                help="registered model for a better embedding model (default lakerag_embedding; "
                                     "<catalog>.<schema>.lakerag_embedding with --registry-uri databricks-uc)")
    finetuned_eval.add_argument("--reranker-model-name", default=None,
                                help="registered model for a better reranker (default lakerag_reranker, likewise)")

    forget_, where = _engine_task(
        tasks, "forget", _forget,
        "remove one document everywhere now (an erasure request), and report what went",
        "Delete every row made from DOCUMENT (all versions of its file): bronze, quarantine, silver "
        "documents, sections, chunks and failures, summaries, gold vectors, eval questions and the "
        "serving answers that cite it; rebuild the index and delete the index versions that held it; "
        "delete the landing file (else the next ingest brings it back); then VACUUM the local tables "
        "touched with zero retention, so time travel cannot bring the rows back either. The scheduled "
        "pipeline does the same for a deleted file on its next run, except VACUUM. Run it while no "
        "pipeline job is writing: zero-retention VACUUM removes files a writer has not committed yet.",
    )
    _add_index_root(where)
    forget_.add_argument("document", help="a doc_id, a landing path, or a file name")
    forget_.add_argument("--dry-run", action="store_true", help="report what would be removed; change nothing")
    forget_.add_argument("--keep-source", action="store_true", help="leave the landing file in place")

    batch, where = _engine_task(
        tasks, "serve-batch", _serve_batch,
        "answer the questions of serving_questions into serving_answers with a registered chain",
        "Load models:/<model-name>@<alias> (default alias champion) and answer every question of "
        "serving_questions that has no answer from that model version yet; answers (with citations, "
        "tokens and latency) or errors are merged into serving_answers by question_id.",
    )
    _add_mlflow(where)
    _add_model(where, alias="champion")
    where.add_argument("--model", default=None, help="any MLflow model URI (overrides --model-name/--alias)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]) and run the chosen task; returns the exit code."""
    args = build_parser().parse_args(argv)
    # Our progress at INFO; libraries (faiss, sentence-transformers, py4j) only when they warn.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    # Sail logs every session start at INFO through Rust's logger; keep it to real problems.
    os.environ.setdefault("RUST_LOG", "error")
    from lakerag.settings import SettingsError

    try:
        if hasattr(args, "runner"):
            return args.runner(args)
        return _run_with_tables(args, args.task)
    except SettingsError as err:
        print(f"lakerag {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
