"""Workflow task: serving_questions -> serving_answers with models:/<name>@champion.

Run `spark-submit jobs/serve_batch.py --help` (or `lakerag serve-batch --help`) for flags.
"""
import sys

from lakerag.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve-batch", *sys.argv[1:]]))
