"""Per-document bounds and crash isolation of the parsing pool (plain Python, no Spark)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from lakerag.ingest.parse_pool import ParseLimits, crashed_parse, parallel_map, parse_document, parse_task, start_pool
from lakerag.ingest.silver import chunk_specs
from lakerag.settings import Settings
from tests import bad_inputs
from tests.conftest import corpus_pdf
from tests.crashing_task import echo_or_die

RUN = datetime(2026, 11, 26, tzinfo=timezone.utc)
WORKERS = 1  # one worker: the pool is cheap to start and still a process of its own


@pytest.fixture(scope="module")
def pool():
    start_pool(WORKERS, Settings().models.embedding)
    return WORKERS


def task(name: str, limits: ParseLimits) -> tuple:
    content = corpus_pdf(name).read_bytes()
    return ("doc-" + name, content, "/landing/" + name, name, (), chunk_specs(Settings()), RUN, limits)


def test_a_parse_over_the_time_limit_becomes_a_timeout_row():
    # In this (main) thread the timer applies too; R-intro takes seconds to parse.
    row = parse_document(*task("R-intro.pdf", ParseLimits(max_seconds=0.05)))
    assert row["reason"] == "timeout" and "max_parse_seconds=0.05" in row["message"]
    assert row["sections"] == [] and row["chunks"] == []


def test_a_worker_killed_mid_task_costs_only_its_own_item(pool):
    rows = parallel_map(echo_or_die, ["a", "die", "b", "c"], pool, "echo", on_crash=lambda item, why: f"crashed: {why}")
    assert rows[0] == "A" and rows[2:] == ["B", "C"]
    assert rows[1].startswith("crashed: the echo process died on this item")
    # and the pool works afterwards
    assert parallel_map(echo_or_die, ["d"], pool, "echo") == ["D"]


def test_a_worker_crash_without_on_crash_is_an_error(pool):
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool):
        parallel_map(echo_or_die, ["die"], pool, "echo")


def test_crashed_parse_row_names_the_document():
    row = crashed_parse(task("R-data.pdf", ParseLimits()), "died")
    assert (row["doc_id"], row["file_name"], row["reason"], row["message"]) == (
        "doc-R-data.pdf", "R-data.pdf", "worker_crashed", "died")


def test_a_document_whose_text_outgrows_the_memory_bound_becomes_a_memory_limit_row(pool):
    # memory_hog: 300 kB of PDF, 400 MB of text. The bound applies in the pool's worker.
    args = ("hog", bad_inputs.memory_hog(), "/landing/hog.pdf", "hog.pdf", (), chunk_specs(Settings()), RUN,
            ParseLimits(max_memory_mb=32, max_seconds=120))
    row, after = parallel_map(parse_task, [args, task("R-data.pdf", ParseLimits(max_memory_mb=32))], pool, "parse")
    assert row["reason"] == "memory_limit" and "max_parse_memory_mb=32 MB" in row["message"]
    # the worker that hit the bound parses the next document in full
    assert after["reason"] is None and len(after["sections"]) > 10
