"""Flags and helpers every command group shares: engine, catalog and schema, MLflow, the model
alias, the index root, and running a task on the engine with the tables in place."""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger("lakerag")
DEFAULT_CONF = Path("conf/pipeline.yml")


def add_common(parser: argparse.ArgumentParser, engine: bool = True) -> argparse._ArgumentGroup:
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


def add_index_root(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--index-root", type=Path, default=os.environ.get("LAKERAG_INDEX_ROOT"),
                       help="folder of index artifacts (a UC volume path on Databricks); default "
                            "<lake-root>/indexes/<catalog>/<schema>; env LAKERAG_INDEX_ROOT")


def add_mlflow(group: argparse._ArgumentGroup) -> None:
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


def mlflow_experiment(args: argparse.Namespace) -> str:
    """Configure MLflow from the flags and activate the experiment; returns its id."""
    from lakerag.tracking import configure_mlflow, use_experiment

    configure_mlflow(args.tracking_uri, args.registry_uri, args.lake_root)
    return use_experiment(args.experiment, args.lake_root)


def add_model(group: argparse._ArgumentGroup, alias: str | None) -> None:
    group.add_argument("--model-name", default=os.environ.get("LAKERAG_MODEL_NAME"),
                       help="registered model (default lakerag_chain; <catalog>.<schema>.lakerag_chain with "
                            "--registry-uri databricks-uc; env LAKERAG_MODEL_NAME)")
    if alias is not None:  # evaluate takes several (--aliases) instead
        group.add_argument("--alias", default=alias, help="registry alias (default %(default)s)")


def model_name_of(args: argparse.Namespace) -> str:
    from lakerag.chain.registry import default_model_name

    return args.model_name or default_model_name(args.catalog, args.schema, args.registry_uri == "databricks-uc")


def model_uri_of(args: argparse.Namespace) -> str:
    """--model when given, else models:/<model name>@<alias>."""
    return args.model or f"models:/{model_name_of(args)}@{args.alias}"


def index_root_of(args: argparse.Namespace) -> Path:
    if args.index_root:
        return Path(args.index_root)
    return Path(args.lake_root) / "indexes" / args.catalog / args.schema


def run_with_tables(args: argparse.Namespace, task: Callable[..., int]) -> int:
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


def with_budget(settings, section: str, max_sections: int | None):
    """Settings with <section>.max_sections replaced by --max-sections when it is given."""
    from lakerag.settings import apply_overrides

    return settings if max_sections is None else apply_overrides(settings, [f"{section}.max_sections={max_sections}"])


def engine_task(tasks, name: str, task: Callable[..., int], summary: str, description: str):
    """Add a subcommand that runs `task` on the engine; returns it and its location flag group."""
    command = tasks.add_parser(name, help=summary, description=description)
    command.set_defaults(task=task)
    return command, add_common(command)
