"""Workflow task: bronze PDFs -> silver documents, sections, chunks and parse failures.

Run `spark-submit jobs/build_silver.py --help` (or `lakerag build-silver --help`) for flags.
"""
import sys

from lakerag.cli import main

if __name__ == "__main__":
    sys.exit(main(["build-silver", *sys.argv[1:]]))
