"""Workflow task: lakerag promote.

Run `python jobs/promote.py --help` (or `lakerag promote --help`) for flags.
"""
import sys

from lakerag.cli import main

if __name__ == "__main__":
    sys.exit(main(["promote", *sys.argv[1:]]))
