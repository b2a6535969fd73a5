"""`lakerag` command line: one subcommand per workflow task, grouped by stage (pipeline.py builds
the lakehouse, chain.py searches, registers and asks, serving.py serves, evaluation.py evaluates
and fine-tunes), with the flags they share in common.py.

The scripts in jobs/ call `main` with their subcommand, so `spark-submit jobs/<task>.py`, a
Databricks `spark_python_task` and the `lakerag` console script (`python_wheel_task`) all run
the same code.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from lakerag import __version__
from lakerag.cli import chain, evaluation, pipeline, serving
from lakerag.cli.common import run_with_tables

log = logging.getLogger("lakerag")


def build_parser() -> argparse.ArgumentParser:
    """The `lakerag` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="lakerag",
        description="Lakehouse RAG pipeline: PDFs -> bronze/silver/gold Delta tables -> RAG chain.",
    )
    parser.add_argument("--version", action="version", version=f"lakerag {__version__}")
    tasks = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (pipeline, chain, serving, evaluation):
        group.add_commands(tasks)
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
        return run_with_tables(args, args.task)
    except SettingsError as err:
        print(f"lakerag {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

