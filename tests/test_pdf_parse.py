"""Parsing real PDFs from the corpus: pure functions on bytes, no Spark."""
from __future__ import annotations

import io
from functools import lru_cache

import pytest
from pypdf import PdfReader

from lakerag.ingest.pdf_parse import (
    Line,
    ParseFailure,
    Run,
    drop_running_lines,
    extract_paragraphs,
    open_pdf,
    page_runs,
    paragraphs_of_flow,
    parse_pdf,
)
from lakerag.ingest.table_extract import Rules
from tests import bad_inputs
from tests.conftest import corpus_pdf


@lru_cache(maxsize=None)
def parsed(name: str):
    """A corpus PDF parsed once per test session."""
    return parse_pdf(corpus_pdf(name).read_bytes(), name)


def outline_of(name: str) -> list[tuple[str, int]]:
    """(title, 1-based page) of every outline entry, straight from pypdf."""
    reader = PdfReader(corpus_pdf(name))
    entries: list[tuple[str, int]] = []

    def walk(items):
        for item in items:
            if isinstance(item, list):
                walk(item)
            else:
                entries.append((" ".join(item.title.split()), reader.get_destination_page_number(item) + 1))

    walk(reader.outline)
    return entries


@pytest.mark.parametrize("name", ["R-data.pdf", "R-intro.pdf", "debian-faq.pdf", "mnras_guide.pdf"])
def test_sections_follow_the_outline_titles_and_pages(name):
    found = [(s.title, s.page_start) for s in parsed(name).sections if s.origin == "outline"]
    assert found == outline_of(name)


def test_heading_is_cut_from_the_body_and_the_answer_follows_it():
    section = next(s for s in parsed("debian-faq.pdf").sections
                   if s.title == "Will there be different versions of packages in different distributions?")
    assert section.heading_path[0] == "Choosing a Debian distribution"
    assert section.text.startswith("Yes. Unstable has the most recent (latest) versions.")
    assert "different distributions?" not in section.text


def test_words_are_separated_where_the_pdf_spaces_them_by_position():
    # The Debian FAQ's CID font draws word gaps as TJ offsets that pypdf alone ignores.
    body = " ".join(s.text for s in parsed("debian-faq.pdf").sections)
    assert "the packages in unstable are not well tested" in body
    assert "thepackagesin" not in body


def test_two_columns_are_read_column_by_column():
    # Page 4 of the APS guide: its content stream draws the two columns' lines interleaved.
    paragraphs, _ = extract_paragraphs(open_pdf(corpus_pdf("apsguide4-2.pdf").read_bytes()))
    page = [p.text for p in paragraphs if p.page == 4]
    left_end = next(i for i, text in enumerate(page) if text.endswith("\\marginparsep, and \\marginparpush."))
    # the first column's last sentence is followed by the second column's heading and first sentence
    assert page[left_end + 1] == "VI. MATH MARKUP"
    assert page[left_end + 2].startswith("In general, all math markup and the standard math environments")
    # and lines of one column are not glued to lines of the other
    assert any("Some bold characters may require using the amsfonts class option." in t for t in page)


def test_headings_from_fonts_when_there_is_no_outline():
    guide = parsed("apsguide4-2.pdf")
    assert guide.outline_entries == 0
    by_title = {s.title: s for s in guide.sections}
    paper_size = by_title["II.2. Paper size"]
    assert (paper_size.origin, paper_size.page_start) == ("headings", 2)
    assert paper_size.text.startswith("Manuscripts should be submitted to APS formatted for letter size paper.")


def _line(x: float, y: float, text: str, size: float = 10.0) -> Line:
    return Line([Run(x, y, size, False, text, x + 0.5 * size * len(text))], page=1)


def test_callout_in_its_own_font_and_margin_is_its_own_paragraph():
    flow = [
        _line(54, 700, "The method works in three steps and each step"),
        _line(54, 688, "is explained below in its own section."),
        _line(80, 676, "Note: the second step needs a license key.", size=8.5),
        _line(80, 666, "Ask your administrator for one.", size=8.5),
        _line(54, 654, "The first step reads the input files."),
    ]
    texts = [p.text for p in paragraphs_of_flow(flow)]
    assert texts == [
        "The method works in three steps and each step is explained below in its own section.",
        "Note: the second step needs a license key. Ask your administrator for one.",
        "The first step reads the input files.",
    ]


def test_hyphenated_line_break_is_rejoined():
    flow = [_line(54, 700, "a well-known exam-"), _line(54, 688, "ple of the method")]
    assert [p.text for p in paragraphs_of_flow(flow)] == ["a well-known example of the method"]


@pytest.mark.parametrize(
    ("content", "passwords", "reason"),
    [
        (corpus_pdf("libreoffice-writer-password.pdf").read_bytes(), (), "encrypted"),
        (corpus_pdf("libreoffice-writer-password.pdf").read_bytes(), ("wrong",), "encrypted"),
        (corpus_pdf("imagemagick-images.pdf").read_bytes(), (), "no_text"),
        (b"%PDF-1.7\n" + bytes(range(256)) * 8 + b"\n%%EOF\n", (), "malformed"),
    ],
    ids=["encrypted", "wrong-password", "image-only", "malformed"],
)
def test_unparseable_documents_fail_with_a_reason(content, passwords, reason):
    with pytest.raises(ParseFailure) as failure:
        parse_pdf(content, "x.pdf", passwords)
    assert failure.value.reason == reason
    assert len(failure.value.message) > 20


def test_configured_password_opens_an_encrypted_pdf():
    document = parse_pdf(corpus_pdf("libreoffice-writer-password.pdf").read_bytes(), "p.pdf", ("openpassword",))
    assert document.page_count == 1 and document.sections[0].text


@pytest.mark.parametrize(
    ("name", "reason"),
    [("decompression-bomb.pdf", "resource_limit"), ("huge-page-count.pdf", "too_many_pages"),
     ("image-only.pdf", "no_text"), ("encrypted.pdf", "encrypted"), ("truncated.pdf", "malformed")],
)
def test_generated_bad_pdfs_fail_with_their_reason(name, reason):
    with pytest.raises(ParseFailure) as failure:
        parse_pdf(bad_inputs.corpus("secret")[name], name, max_pages=5000)
    assert failure.value.reason == reason


def test_page_tree_bomb_hits_pypdfs_own_limit_when_ours_is_off():
    with pytest.raises(ParseFailure) as failure:
        parse_pdf(bad_inputs.huge_page_count(), "huge.pdf", max_pages=0)
    assert failure.value.reason == "resource_limit" and "page tree" in failure.value.message


@pytest.mark.parametrize(
    ("name", "warning"),
    [("broken-xref.pdf", "incorrect startxref pointer"), ("deep-outline.pdf", "outline ignored")],
)
def test_repairable_pdfs_parse_and_say_what_was_repaired(name, warning):
    document = parse_pdf(bad_inputs.corpus("secret")[name], name)
    assert document.sections[0].text == bad_inputs.SENTENCE.decode()
    assert any(w.startswith(warning) for w in document.warnings), document.warnings


def test_clean_pdf_has_no_warnings():
    assert parse_pdf(bad_inputs.good(), "good.pdf").warnings == []


def test_text_that_is_not_valid_unicode_comes_out_as_valid_utf8():
    document = parse_pdf(bad_inputs.non_utf_text(), "x.pdf")
    text = document.sections[0].text
    assert text.startswith("\ufffd lone surrogate, \U0001F600 a pair")
    text.encode("utf-8")  # raises on a surrogate left in


def page_of(number: int, lines: list[tuple[float, str]]) -> list[Line]:
    """One page of single-run lines at (baseline, text)."""
    return [Line([Run(72, y, 10, False, text, 72 + 5 * len(text))], page=number) for y, text in lines]


def body(number: int, top: float) -> list[tuple[float, str]]:
    """Six body lines at one pitch (12 pt) from `top`, each page's own words."""
    words = ["apt", "dpkg", "kernel", "mirror", "sources", "upgrade", "release", "archive"]
    return [(top - 12 * i, f"The {words[number]} text goes on, line {'abcdef'[i]} of it.") for i in range(6)]


def test_a_running_header_whose_text_varies_is_dropped_and_repeating_body_text_kept():
    headers = ["CHAPTER 1. BASICS 1.1. WHAT IS IT?", "1.2. WHO USES IT? 4", "CHAPTER 2. INSTALLING 2.1. HOW?",
               "2.2. FROM SOURCE 6", "CHAPTER 3. UPGRADING 3.1. WHEN?", "3.4. AND THEN 8"]
    pages = [page_of(n, [(800, header), *body(n, 760), (760 - 12 * 6 - 12 * (n % 3), "Back up your files first.")])
             for n, header in enumerate(headers, start=1)]
    kept = drop_running_lines(pages)
    texts = [line.text for page in kept for line in page]
    assert not set(headers) & set(texts)
    assert texts.count("Back up your files first.") == 6  # repeats, but at different heights
    assert len(texts) == 6 * 7


def test_a_body_that_starts_at_the_same_height_on_every_page_keeps_its_first_line():
    pages = [page_of(n, body(n, 760)) for n in range(1, 8)]
    kept = drop_running_lines(pages)
    assert [line.text for page in kept for line in page] == [line.text for page in pages for line in page]


def test_ligatures_and_compatibility_characters_come_out_as_plain_letters():
    line = Line([Run(72, 700, 10, False, "The \ufb01les di\ufb00er: su\ufb03cient \u2460", 300)], page=1)
    assert line.text == "The files differ: sufficient 1"


def test_text_and_boxes_inside_a_form_xobject_are_placed_on_the_page():
    # a figure as a form XObject (its own matrix scales by 2), drawn under a cm that moves it
    form = bad_inputs.stream(b"0 0 50 20 re S BT /F1 5 Tf 10 20 Td (figure label) Tj ET",
                             b"/Type /XObject /Subtype /Form /BBox [0 0 100 100] /Matrix [2 0 0 2 0 0] "
                             b"/Resources << /Font << /F1 5 0 R >> >>")
    content = bad_inputs.stream(b"q 1 0 0 1 100 400 cm /Fm1 Do Q BT /F1 10 Tf 72 700 Td (body text) Tj ET "
                                b"10 10 30 30 re W n")
    pdf = bad_inputs.one_page(content, resources_extra=b"/XObject << /Fm1 6 0 R >>", more=[form])
    rules = Rules()
    runs = page_runs(PdfReader(io.BytesIO(pdf)).pages[0], rules)
    assert [(r.text, r.x, r.y, r.size) for r in runs] == [("figure label", 120.0, 440.0, 10.0),
                                                         ("body text", 72.0, 700.0, 10.0)]
    assert rules.boxes == [(100.0, 400.0, 200.0, 440.0)]  # the clipping rectangle is no box


def test_text_pending_before_a_form_and_an_image_stay_in_page_space():
    form = bad_inputs.stream(b"BT /F1 5 Tf 0 0 Td (inside) Tj ET",
                             b"/Type /XObject /Subtype /Form /BBox [0 0 100 100] /Matrix [1 0 0 1 100 0] "
                             b"/Resources << /Font << /F1 5 0 R >> >>")
    image = bad_inputs.stream(b"\xff", b"/Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray "
                                       b"/BitsPerComponent 8")
    # text shown before a Do inside BT (invalid, but written by some producers) is reported after it
    content = bad_inputs.stream(b"BT /F1 10 Tf 72 700 Td (before the form) Tj /Fm1 Do ET "
                                b"BT /F1 10 Tf 72 600 Td (before the image) Tj /Im1 Do ET BT /F1 10 Tf 72 500 Td (after) Tj ET")
    pdf = bad_inputs.one_page(content, resources_extra=b"/XObject << /Fm1 6 0 R /Im1 7 0 R >>", more=[form, image])
    runs = page_runs(PdfReader(io.BytesIO(pdf)).pages[0])
    assert [(r.text, r.x, r.y) for r in runs] == [("before the form", 72.0, 700.0), ("inside", 100.0, 0.0),
                                                 ("before the image", 72.0, 600.0), ("after", 72.0, 500.0)]
