"""Workflow task: silver sections -> LLM summaries and metadata in silver_section_summaries.

Run `spark-submit jobs/summarize_sections.py --help` (or `lakerag summarize-sections --help`).
"""
import sys

from lakerag.cli import main

if __name__ == "__main__":
    sys.exit(main(["summarize-sections", *sys.argv[1:]]))
