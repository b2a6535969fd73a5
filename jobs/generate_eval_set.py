"""Workflow task: lakerag generate-eval-set.

Run `python jobs/generate_eval_set.py --help` (or `lakerag generate-eval-set --help`) for flags.
"""
import sys

from lakerag.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate-eval-set", *sys.argv[1:]]))
