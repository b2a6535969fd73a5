"""Workflow task: lakerag check-judge.

Run `python jobs/check_judge.py --help` (or `lakerag check-judge --help`) for flags.
"""
import sys

from lakerag.cli import main

if __name__ == "__main__":
    sys.exit(main(["check-judge", *sys.argv[1:]]))
