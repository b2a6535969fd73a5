"""Section links from a PDF's own link annotations and text references (silver_section_links)."""
from __future__ import annotations

import re
from dataclasses import replace

from lakerag.ingest.parse_pool import link_rows, section_rows
from lakerag.ingest.pdf_parse import (
    PageLink,
    Section,
    extract_paragraphs,
    open_pdf,
    outline_entries,
    parse_pdf,
    sections_from_outline,
)
from lakerag.ingest.section_links import link_targets, section_numbers
from tests.bad_inputs import FONT, raw_pdf, stream
from tests.conftest import corpus_pdf


def _lines(*lines: tuple[int, int, bytes]) -> bytes:
    return b"\n".join(b"BT /F1 %d Tf 72 %d Td (%s) Tj ET" % line for line in lines)


def linked_guide() -> bytes:
    """Two pages: '1 Installing' has a link annotation on 'signing keys' to the heading of
    '2.1 Signing keys' on page 2 and refers to a Section 9.9 that does not exist; '2 Keys'
    says 'See Section 2.1 below'."""
    page_one = _lines((18, 720, b"1 Installing"),
                      (11, 690, b"Read about the signing keys before you install anything at all."),
                      (11, 650, b"Older releases are covered in Section 9.9 of the old guide."))
    page_two = _lines((18, 720, b"2 Keys"),
                      (11, 690, b"Every package in the archive is signed. See Section 2.1 below."),
                      (14, 600, b"2.1 Signing keys"),
                      (11, 570, b"The archive signing keys live in the trusted keyring directory."))
    page = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 7 0 R >> >> "
            b"/Contents %d 0 R %s >>")
    # Helvetica has no /Widths here: the parser estimates half an em a glyph, so "signing keys"
    # (characters 15-26 of the line) spans x = 72 + 5.5 * 15 .. 72 + 5.5 * 27.
    link = b"<< /Type /Annot /Subtype /Link /Rect [154.5 686 220.5 700] /Dest [4 0 R /XYZ 72 615 null] >>"
    return raw_pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >>",
        page % (5, b"/Annots [8 0 R]"), page % (6, b""),
        stream(page_one), stream(page_two), FONT, link,
    ])


def _edges(content: bytes) -> set[tuple[str, str | None, str, str]]:
    """(from title, to title or None, kind, text) of every silver_section_links row of a PDF."""
    parsed = parse_pdf(content, "guide.pdf")
    sections = section_rows("d", parsed)
    title = {row["section_id"]: row["title"] for row in sections}
    return {(title[r["from_section_id"]], title.get(r["to_section_id"]), r["kind"], r["text"])
            for r in link_rows("d", parsed, sections)}


def test_a_link_annotation_resolves_to_the_section_at_its_destination():
    links = [edge for edge in _edges(linked_guide()) if edge[2] == "link"]
    assert links == [("1 Installing", "2.1 Signing keys", "link", "signing keys")]


def test_a_see_section_reference_resolves_and_a_missing_section_is_counted_not_linked():
    edges = _edges(linked_guide())
    references = sorted((edge for edge in edges if edge[2] == "reference"), key=str)
    assert references == [("1 Installing", None, "reference", "Section 9.9"),
                          ("2 Keys", "2.1 Signing keys", "reference", "Section 2.1")]
    # the tree's own edges: each section's parent, and the next section in reading order
    assert {edge for edge in edges if edge[2] in ("parent", "next")} == {
        ("2.1 Signing keys", "2 Keys", "parent", ""),
        ("1 Installing", "2 Keys", "next", ""), ("2 Keys", "2.1 Signing keys", "next", "")}


def test_section_numbers_come_from_headings_or_are_counted_where_headings_carry_none():
    def section(title: str, level: int) -> Section:
        return Section(title, level, [title], 1, "outline")

    numbered = [section("Guide", 0), section("Acknowledgements", 1), section("1 Introduction", 1),
                section("Imports", 2), section("Encodings", 3), section("2 Data", 1), section("Export", 2),
                section("A A sample session", 1)]
    assert section_numbers(numbered) == [None, None, "1", "1.1", "1.1.1", "2", "2.1", "A"]
    counted = [section("Definitions", 1), section("What is this FAQ?", 2), section("Installing", 1),
               section("Latest version", 2), section("Images", 2)]
    assert section_numbers(counted) == ["1", "1.1", "2", "2.1", "2.2"]
    # an article is not an appendix letter where no sibling carries a number
    article = [section("Introduction", 1), section("A Brief History", 1), section("Origins", 2)]
    assert section_numbers(article) == ["1", "2", "2.1"]


def test_every_debian_faq_link_lands_on_the_section_its_hyperref_destination_names():
    """hyperref names each destination after its section number ("section.12.1"): the section a
    link resolves to must carry that number, counted from the outline (the FAQ's headings carry none)."""
    reader = open_pdf(corpus_pdf("debian-faq.pdf").read_bytes())
    links: list[PageLink] = []
    paragraphs, _ = extract_paragraphs(reader, links=links)
    sections = sections_from_outline(outline_entries(reader), paragraphs, "FAQ")
    numbers = section_numbers(sections)
    names = [str(a["/A"]["/D"]) for page in reader.pages for a in (x.get_object() for x in page.get("/Annots") or [])
             if a.get("/Subtype") == "/Link" and "/A" in a and a["/A"].get("/S") == "/GoTo"]
    assert len(names) == len(links)  # the FAQ's internal links are all GoTo actions
    first = paragraphs[0]
    checked = 0
    for name, link in zip(names, links):
        wanted = re.fullmatch(r"(?:chapter|section|subsection|subsubsection)\.([\d.]+)", name)
        if not wanted:
            continue  # footnotes, the title page
        # Placed in the front matter, so that every link yields an edge, whatever its source.
        (edge,) = link_targets([replace(link, page=first.page, x=first.x0 + 1, y=first.y)], sections, paragraphs)
        assert numbers[edge.target] == wanted.group(1), (name, sections[edge.target].title)
        checked += 1
    assert checked == 215
