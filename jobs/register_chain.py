"""Workflow task: latest index -> RAG chain logged to MLflow, checked, registered, alias challenger.

Run `python jobs/register_chain.py --help` (or `lakerag register-chain --help`) for flags.
"""
import sys

from lakerag.cli import main

if __name__ == "__main__":
    sys.exit(main(["register-chain", *sys.argv[1:]]))
