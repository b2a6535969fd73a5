"""Ruled tables: found by pdfplumber where the page's rules form a grid, stored as one Markdown
paragraph and a `table` chunk of their own, put into the prompt whole, and a question about a
cell answered from it."""
from __future__ import annotations

import dataclasses

import pytest

from lakerag.chain.llm import make_llm
from lakerag.chain.rag import RagChain, select_passages
from lakerag.enrich.embeddings import run_gold
from lakerag.enrich.index_build import build_index
from lakerag.ingest.bronze import ingest_bronze
from lakerag.ingest.chunking import ChunkSpec
from lakerag.ingest.parse_pool import chunk_rows
from lakerag.ingest.pdf_parse import parse_pdf, parser_version
from lakerag.ingest.silver import run_silver
from lakerag.ingest.table_extract import Rules
from lakerag.lakehouse.tables import SILVER_CHUNKS
from lakerag.markdown_tables import is_table, markdown
from lakerag.retrieval.retriever import Hit, Retriever
from lakerag.settings import ChainSettings
from tests.bad_inputs import ruled_table_pdf
from tests.conftest import put
from tests.scripted_http import ScriptedServer, served_settings

CELLS = [["Package", "Version", "Size"], ["dpkg", "1.21.22", "6.4 MB"], ["apt", "2.6.1", "4.1 MB"],
         ["aptitude", "0.8.13", "12.9 MB"]]
TABLE = ("Table 1: Package versions in the release\n| Package | Version | Size |\n|---|---|---|\n"
         "| dpkg | 1.21.22 | 6.4 MB |\n| apt | 2.6.1 | 4.1 MB |\n| aptitude | 0.8.13 | 12.9 MB |")


def table_pdf() -> bytes:
    """The release notes page with its captioned 3 x 4 ruled table."""
    return ruled_table_pdf(CELLS, "Table 1: Package versions in the release")


def test_a_ruled_table_is_one_markdown_paragraph_with_its_caption_and_its_cells_leave_the_text():
    document = parse_pdf(table_pdf(), "notes.pdf", tables=True)
    [section] = document.sections
    assert section.heading_path == ["Release notes"]
    paragraphs = [p.text for p in section.paragraphs]
    assert paragraphs == ["The release ships the package tools listed below, each with its version.", TABLE,
                          "Older versions remain in the archive for one release cycle."]
    assert section.table_boxes == [[72.0, 520.0, 522.0, 600.0]]  # the grid's outer rules, in points
    assert document.parser_version == parser_version(None, True) != parser_version()
    # without tables, the cells are loose lines of text
    plain = [p.text for s in parse_pdf(table_pdf(), "notes.pdf").sections for p in s.paragraphs]
    assert not any(is_table(p) for p in plain) and any("dpkg" in p and "1.21.22" in p for p in plain)


def test_rules_tell_a_grid_from_a_framed_box():
    box, grid = Rules(), Rules()
    identity = [1, 0, 0, 1, 0, 0]
    box.see(b"re", [72, 500, 400, 100], identity)  # a framed code box: 2 x 2 positions
    box.see(b"re", [72.5, 500.5, 399, 99], identity)  # drawn twice, half a point in
    for x in (72, 222, 372):
        grid.see(b"m", [x, 600], identity)
        grid.see(b"l", [x, 540], identity)
    for y in (600, 570, 540):
        grid.see(b"re", [72, y, 300, 0.5], identity)  # rules as thin filled rectangles
    assert (box.grid(), grid.grid()) == (False, True)


def test_a_table_is_a_chunk_of_its_own_for_every_strategy():
    section = {"section_id": "s1", "doc_id": "d1", "heading_path": ["Release notes"],
               "text": "Before the table.\n\n" + TABLE + "\n\nAfter the table.", "paragraph_pages": [1, 2, 2],
               "table_boxes": [[72.0, 520.0, 522.0, 600.0]]}
    specs = [ChunkSpec("section", 254, model="all-MiniLM-L6-v2"),
             ChunkSpec("paragraph", 254, paragraph_min_tokens=0, model="all-MiniLM-L6-v2")]
    rows = chunk_rows(section, specs, {})
    box = [72.0, 520.0, 522.0, 600.0]
    by_strategy = {spec.strategy: [(r["chunk_kind"], r["text"], r["page_start"], r["bbox"]) for r in rows
                                   if r["strategy"] == spec.strategy] for spec in specs}
    assert by_strategy["section"] == [("text", "Before the table.\n\nAfter the table.", 1, None),
                                      ("table", TABLE, 2, box)]
    assert by_strategy["paragraph"] == [("text", "Before the table.", 1, None), ("text", "After the table.", 2, None),
                                        ("table", TABLE, 2, box)]
    # a section parsed before boxes were kept still chunks, its table without a box
    older = chunk_rows({**section, "table_boxes": None}, specs[:1], {})
    assert [(r["chunk_kind"], r["bbox"]) for r in older] == [("text", None), ("table", None)]


def _hit(section_text: str, text: str) -> Hit:
    return Hit("c1", "s1", "d1", "Notes", "notes.pdf", ["Release notes"], 1, 1, 1.0, text, section_text,
               paragraph_pages=[1] * len(section_text.split("\n\n")))


def test_a_table_goes_into_the_prompt_whole_or_not_at_all():
    words = lambda text: len(text.split())  # noqa: E731 - a token count for the test
    section = "Before the table.\n\n" + TABLE
    # the matching chunk is the table: it is the hit's passage, whole, though over the budget
    [passage] = select_passages([_hit(section, TABLE)], 20, words)
    assert [text for _, text, _ in passage.paragraphs] == [TABLE]
    # as a neighbour over the budget, it is left out rather than cut into rows
    [passage] = select_passages([_hit(section, "Before the table.")], 20, words)
    assert [text for _, text, _ in passage.paragraphs] == ["Before the table."]
    assert markdown([["a", "b|c"], ["1"]]) == "| a | b\\|c |\n|---|---|\n| 1 |  |"


@pytest.mark.slow
def test_a_question_about_a_cell_is_answered_from_the_table_chunk(spark, lakehouse, landing, tmp_path):
    put(landing, "notes.pdf", table_pdf())
    put(landing, "mnras_guide.pdf", "mnras_guide.pdf")  # distractors
    with ScriptedServer([(200, "aptitude 0.8.13 is in the release [1].")]) as server:
        base = served_settings(server)
        settings = dataclasses.replace(base, silver=dataclasses.replace(base.silver, tables=True),
                                       chain=ChainSettings())
        ingest_bronze(spark, lakehouse, str(landing), settings.bronze)
        run_silver(spark, lakehouse, settings, "sail")
        kinds = {r.chunk_kind for r in spark.table(lakehouse.table(SILVER_CHUNKS.name)).collect()
                 if r.strategy == "section" and "notes" in r.tags["file_name"]}
        assert kinds == {"text", "table"}
        run_gold(spark, lakehouse, settings)
        index = build_index(spark, lakehouse, settings, tmp_path / "indexes").folder
        chain = RagChain(Retriever.from_settings(index, settings), make_llm(settings.llm), settings.chain)
        out = chain.answer([{"role": "user", "content": "Which version of aptitude is in the release?"}])
    prompt = server.requests[-1]["body"]["messages"][-1]["content"]
    assert prompt.startswith("Sources:\n\n[1] notes.pdf, p. 1: ") and TABLE in prompt
    [citation] = out["citations"]
    assert citation["file_name"] == "notes.pdf" and "0.8.13" in citation["quotes"][0]["quote"]
