"""Workflow task: landing files -> bronze_documents / bronze_quarantine.

Run `spark-submit jobs/ingest_bronze.py --help` (or `lakerag ingest-bronze --help`) for flags.
"""
import sys

from lakerag.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest-bronze", *sys.argv[1:]]))
