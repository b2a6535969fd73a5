"""Workflow task: gold_embeddings -> FAISS + BM25 index artifacts (and Vector Search on Databricks).

Run `spark-submit jobs/build_index.py --help` (or `lakerag build-index --help`) for flags.
"""
import sys

from lakerag.cli import main

if __name__ == "__main__":
    sys.exit(main(["build-index", *sys.argv[1:]]))
