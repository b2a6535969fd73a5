"""Workflow task: lakerag evaluate-finetuned.

Run `python jobs/evaluate_finetuned.py --help` (or `lakerag evaluate-finetuned --help`) for flags.
"""
import sys

from lakerag.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate-finetuned", *sys.argv[1:]]))
