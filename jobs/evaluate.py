"""Workflow task: lakerag evaluate.

Run `python jobs/evaluate.py --help` (or `lakerag evaluate --help`) for flags.
"""
import sys

from lakerag.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
