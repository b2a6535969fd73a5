"""OCR of pages without a text layer: scans rendered from a real manual's pages are read by
Tesseract into sections, a page OCR cannot read costs only itself, and a scanned page's words
are found by search."""
from __future__ import annotations

import io
import re
import shutil

import pypdfium2 as pdfium
import pytest
from PIL import Image

from lakerag.enrich.embeddings import run_gold
from lakerag.enrich.index_build import build_index
from lakerag.ingest.bronze import ingest_bronze
from lakerag.ingest.ocr import OcrOptions, hocr_lines, unusable_text
from lakerag.ingest.pdf_parse import PARSER_VERSION, Line, ParseFailure, Run, parse_pdf, parser_version
from lakerag.ingest.silver import run_silver
from lakerag.lakehouse.tables import SILVER_DOCUMENTS
from lakerag.retrieval.retriever import Retriever
from lakerag.settings import Settings
from tests.conftest import corpus_pdf, put

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None,
                                     reason="needs Debian's tesseract-ocr: make test installs it (apt)")


def scanned(pages: list[int | None], dpi: int = 150) -> bytes:
    """An image-only PDF of R-data.pdf's pages (1-based; None: a blank white page), as a scanner
    would make it: no text layer, one picture per page."""
    source = pdfium.PdfDocument(corpus_pdf("R-data.pdf").read_bytes())
    images = [source[n - 1].render(scale=dpi / 72, grayscale=True).to_pil() if n else
              Image.new("L", (int(8.5 * dpi), 11 * dpi), 255) for n in pages]
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=dpi, save_all=True, append_images=images[1:])
    return out.getvalue()


HOCR = b"""<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><body>
<div class='ocr_page' title='image "x.png"; bbox 0 0 1700 2200; ppageno 0'>
 <span class='ocr_line' title="bbox 254 267 599 300; baseline 0 -4; x_size 40; x_descenders 5; x_ascenders 11">
  <span class='ocrx_word' title='bbox 254 269 273 300; x_wconf 95'>1</span>
  <span class='ocrx_word' title='bbox 305 267 599 300; x_wconf 12'>Introduction</span>
 </span>
</div></body></html>"""


def test_hocr_words_become_runs_in_user_space_on_the_line_baseline():
    # 200 dpi: scale 200/72; the baseline sits 4 px above the line box's bottom (300 - 4 = 296 px);
    # the crop box starts at (50, 100) in user space
    (line,) = hocr_lines(HOCR, 3, 792.0, 200 / 72, origin=(50.0, 100.0))
    assert line.page == 3 and line.text == "1 Introduction"
    first, second = line.runs
    assert (round(first.x, 2), round(first.y, 2), first.size, round(first.x1, 2)) == (141.44, 785.44, 11.5, 148.28)
    assert (round(second.x, 2), second.y) == (159.8, first.y)


def test_a_page_is_unusable_when_empty_or_mostly_unmapped_characters():
    def page(text: str) -> list[Line]:
        return [Line([Run(0, 0, 10, False, text, 50)], 1)]

    assert unusable_text([]) and unusable_text(page("   "))
    assert unusable_text(page("\ufffd\ufffd\ue000\ue001 ab"))  # 4 broken of 6
    assert not unusable_text(page("Reading data \ufffd into R"))
    assert not unusable_text(page("قراءة البيانات"))  # another script is text


@needs_tesseract
def test_a_scanned_manual_page_is_read_into_sections_with_its_page():
    document = parse_pdf(scanned([6, 7]), "scan.pdf", ocr=OcrOptions())
    assert document.ocr_pages == [1, 2] and document.pages_with_text == 2
    # Tesseract's version is part of the parser version: another one reads the scans again
    assert re.fullmatch(re.escape(PARSER_VERSION) + r"\+ocr200-eng-tesseract\d+\.\d+\.\d+", document.parser_version)
    sections = {section.title: section for section in document.sections}
    assert sections["1.1 Imports"].heading_path == ["1 Introduction", "1.1 Imports"]
    assert sections["1.1 Imports"].page_start == 2
    assert "The easiest form of data to import into R is a simple text file" in sections["1.1 Imports"].text


@needs_tesseract
def test_a_page_ocr_cannot_read_records_why_and_costs_only_itself():
    document = parse_pdf(scanned([None, 7]), "scan.pdf", ocr=OcrOptions())
    assert document.ocr_pages == [2]
    assert document.warnings == ["OCR did not read 1 page(s): page 1: OCR found no text"]
    assert "1.1 Imports" in {section.title for section in document.sections}
    # a page over the time bound is one more such page: every page here, so the document says why
    with pytest.raises(ParseFailure, match=r"OCR read none either: page 1: RuntimeError: Tesseract process timeout"):
        parse_pdf(scanned([7]), "scan.pdf", ocr=OcrOptions(page_seconds=0.01))


@needs_tesseract
def test_without_ocr_a_scan_fails_as_no_text_and_says_what_to_do():
    with pytest.raises(ParseFailure, match=r"no extractable text on any of 1 page\(s\) \(scanned images\? silver.ocr is off\)"):
        parse_pdf(scanned([7]), "scan.pdf")
    with pytest.raises(ParseFailure, match=r"tesseract has no language data for \['xxx'\]"):
        parse_pdf(scanned([7]), "scan.pdf", ocr=OcrOptions(languages="xxx"))


@needs_tesseract
@pytest.mark.slow
def test_a_scanned_pages_words_are_found_by_search_and_the_document_records_its_ocr_pages(
        spark, lakehouse, landing, tmp_path):
    put(landing, "scan.pdf", scanned([6, 7, 8]))
    put(landing, "mnras_guide.pdf", "mnras_guide.pdf")  # a text PDF beside it: distractors
    settings = Settings()
    ingest_bronze(spark, lakehouse, str(landing), settings.bronze)
    run_silver(spark, lakehouse, settings, "sail")
    documents = {r.file_name: r for r in spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).collect()}
    assert documents["scan.pdf"].ocr_pages == [1, 2, 3] and documents["mnras_guide.pdf"].ocr_pages == []
    run_gold(spark, lakehouse, settings)
    index = build_index(spark, lakehouse, settings, tmp_path / "indexes").folder
    top = Retriever.from_settings(index, settings).search("Which function imports data from a simple text file?", k=3)[0]
    assert (top.file_name, top.heading_path, top.page_start) == ("scan.pdf", ["1 Introduction", "1.1 Imports"], 2)


def test_without_tesseract_the_failure_says_how_to_install_it(monkeypatch):
    import pytesseract

    from lakerag.ingest.ocr import check_tesseract, tesseract_version

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    check_tesseract.cache_clear()
    tesseract_version.cache_clear()
    try:
        with pytest.raises(ParseFailure, match=r"page 1: tesseract is not installed: `apt-get install tesseract-ocr`"):
            parse_pdf(scanned([7, 7]), "scan.pdf", ocr=OcrOptions())
        # installing Tesseract later changes the parser version, so such a document is read again
        assert parser_version(OcrOptions()) == f"{PARSER_VERSION}+ocr200-eng-tesseractnone"
    finally:
        check_tesseract.cache_clear()
        tesseract_version.cache_clear()


def test_ocr_line_sizes_near_the_pages_median_are_snapped_to_it():
    from lakerag.ingest.ocr import snap_sizes

    lines = [Line([Run(0, y, size, False, "w ", 5)], 1) for y, size in ((700, 10.0), (680, 10.9), (660, 14.0))]
    assert [line.size for line in snap_sizes(lines)] == [10.9, 10.9, 14.0]
