"""Workflow task: silver chunks -> gold_embeddings.

Run `spark-submit jobs/embed_gold.py --help` (or `lakerag embed-gold --help`) for flags.
"""
import sys

from lakerag.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed-gold", *sys.argv[1:]]))
