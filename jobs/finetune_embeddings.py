"""Workflow task: lakerag finetune-embeddings.

Run `python jobs/finetune_embeddings.py --help` (or `lakerag finetune-embeddings --help`) for flags.
"""
import sys

from lakerag.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune-embeddings", *sys.argv[1:]]))
