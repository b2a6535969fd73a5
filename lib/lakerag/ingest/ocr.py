"""OCR for pages without a usable text layer (scans, photographed pages, broken fonts): the page
is rendered by PDFium (pypdfium2) and read by Tesseract (Debian's tesseract-ocr, through
pytesseract), and its words come back as the parser's Runs and Lines in PDF user space, so that
OCR'd text flows into paragraphs, sections and chunks like any other."""
from __future__ import annotations

import os
import shutil
import signal
import statistics
import time
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from xml.etree import ElementTree

from lakerag.ingest.pdf_parse import Line, Run

# A rendering larger than this is scaled down (an A0 poster at 200 dpi is 62 MP): memory, not text,
# is what grows with it.
MAX_PIXELS = 40_000_000
# Characters a text layer with broken fonts is made of: unassigned, private-use and control
# characters, and U+FFFD (lone surrogates are already U+FFFD: pdf_parse.valid_unicode).
UNREADABLE = {"Cn", "Co", "Cc"}
# OCR'd lines of one paragraph differ in estimated size; within this share of the page's median
# they get the median, so that size changes still mean headings, not noise.
SIZE_SNAP = 0.15


@dataclass(frozen=True)
class OcrOptions:
    """How pages without a usable text layer are read; see silver.ocr* in conf/."""

    dpi: int = 200
    languages: str = "eng"
    page_seconds: float = 60.0
    # OCR of one document stops after this many seconds (0: no bound), the pages left recorded as
    # unread: the parse pool sets it below silver.max_parse_seconds, so a long scan keeps the
    # pages it has read instead of failing whole as a timeout.
    document_seconds: float = 0.0


@lru_cache(maxsize=1)
def tesseract_version() -> str:
    """The installed Tesseract's version ("5.3.0"), or "none": part of the parser version, so
    that installing or upgrading Tesseract reads the scanned pages again."""
    import pytesseract

    try:
        return str(pytesseract.get_tesseract_version())
    except Exception:  # noqa: BLE001 - not installed, or it does not run: no OCR
        return "none"


class OcrUnavailable(Exception):
    """Tesseract is not installed, or lacks a language pack the settings ask for."""


@lru_cache(maxsize=None)
def check_tesseract(languages: str) -> None:
    """Raise OcrUnavailable unless `tesseract` runs here with every language in `languages`."""
    import pytesseract

    if shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
        raise OcrUnavailable("tesseract is not installed: `apt-get install tesseract-ocr` (make does it), "
                             "or set silver.ocr: false")
    missing = set(languages.split("+")) - set(pytesseract.get_languages())
    if missing:
        raise OcrUnavailable(f"tesseract has no language data for {sorted(missing)}: install "
                             f"tesseract-ocr-<lang> or change silver.ocr_languages")


def unusable_text(lines: list[Line]) -> bool:
    """True if a page's text layer is empty or mostly characters no font maps to text."""
    text = "".join(ch for line in lines for ch in line.text if not ch.isspace())
    if not text:
        return True
    broken = sum(1 for ch in text if ch == "\ufffd" or unicodedata.category(ch) in UNREADABLE)
    return broken > 0.5 * len(text)


def draws_an_image(page) -> bool:
    """True if a PDFium page draws at least one image (inside form XObjects too): a page with no
    text and no image is blank, and not worth seconds of OCR."""
    import pypdfium2.raw as pdfium_c

    return next(iter(page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=8)), None) is not None


def _kill_tesseract_children() -> None:
    """SIGKILL this process's tesseract children: pytesseract kills one only on its own timeout,
    and a parse interrupted by the pool's limits would leave it running on the core."""
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        # pid (comm) state ppid ...
        comm, rest = stat[stat.find("(") + 1: stat.rfind(")")], stat[stat.rfind(")") + 2:].split()
        if comm == "tesseract" and int(rest[1]) == os.getpid():
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def ocr_page(page, number: int, options: OcrOptions) -> list[Line]:
    """A PDFium page's words as Lines (Tesseract's own line grouping), in user space; raises
    pytesseract's errors (RuntimeError on a timeout) for the caller to record."""
    import pytesseract

    width, height = page.get_size()  # the crop box, rotated as displayed
    left, bottom, _, _ = page.get_cropbox()
    scale = min(options.dpi / 72, (MAX_PIXELS / max(width * height, 1.0)) ** 0.5)
    image = page.render(scale=scale, grayscale=True).to_pil()
    # Tesseract's OpenMP threads spin: on a parsing pool that already runs one process per core,
    # more than one thread per page only contends (2.5 s a page at one thread, 8 s at two, here).
    os.environ["OMP_THREAD_LIMIT"] = "1"
    try:
        # --dpi: a rendered image carries no resolution, and Tesseract would assume 70 dpi.
        hocr = pytesseract.image_to_pdf_or_hocr(image, lang=options.languages, extension="hocr",
                                                config=f"--psm 3 --dpi {round(scale * 72)}",
                                                timeout=options.page_seconds)
    except BaseException:
        _kill_tesseract_children()
        raise
    return snap_sizes(hocr_lines(hocr, number, height, scale, (left, bottom)))


def snap_sizes(lines: list[Line]) -> list[Line]:
    """Give the runs of lines whose size is within SIZE_SNAP of the page's median that median."""
    if not lines:
        return lines
    median = statistics.median(line.size for line in lines)
    for line in lines:
        if abs(line.size - median) <= SIZE_SNAP * median:
            for run in line.runs:
                run.size = median
    return lines


HOCR_LINES = {"ocr_line", "ocr_caption", "ocr_header", "ocr_textfloat"}


def _title(element: ElementTree.Element) -> dict[str, list[float]]:
    """An hOCR title ("bbox 1 2 3 4; x_size 38.4; x_wconf 95") as {property: numbers}."""
    properties: dict[str, list[float]] = {}
    for part in element.get("title", "").split(";"):
        name, *values = part.split()
        if values and name != "image":
            properties[name] = [float(v) for v in values]
    return properties


def hocr_lines(hocr: bytes, number: int, page_height: float, scale: float,
               origin: tuple[float, float] = (0.0, 0.0)) -> list[Line]:
    """Tesseract's hOCR of one page (pixels from the top left of the crop box) -> Lines in user
    space (points from the bottom left, shifted by the crop box's `origin`): one per hOCR line,
    its words as runs, its size Tesseract's x_size. A rotated page stays as displayed."""
    ox, oy = origin
    lines: list[Line] = []
    for element in ElementTree.fromstring(hocr).iter():
        if element.get("class") not in HOCR_LINES:
            continue
        line = _title(element)
        x0, _top, _x1, bottom = line["bbox"]
        slope, offset = line.get("baseline", [0.0, 0.0])
        size = round(line.get("x_size", [bottom - _top])[0] / scale * 0.8, 1)  # x_size: about 1.25 em
        runs: list[Run] = []
        for word in element:
            text = "".join(word.itertext()).strip()
            box = _title(word)
            if not text:
                continue
            left, _, right, _ = box["bbox"]
            baseline = bottom + offset + slope * (left - x0)
            # A trailing space on each word: the words' gaps are known, not guessed from glyph widths.
            runs.append(Run(ox + left / scale, oy + page_height - baseline / scale, size, False, text + " ",
                            ox + right / scale))
        if runs:
            lines.append(Line(runs, number))
    return lines


def open_document(content: bytes, passwords: tuple[str, ...], page_count: int):
    """The document in PDFium; OcrUnavailable if no password opens it or it sees other pages
    than pypdf (text read from it could land on the wrong page)."""
    import pypdfium2 as pdfium

    error = None
    for password in (None, *passwords):
        try:
            document = pdfium.PdfDocument(content, password=password)
            break
        except pdfium.PdfiumError as err:
            error = err
    else:
        raise OcrUnavailable(f"PDFium cannot open the document: {error}")
    if len(document) != page_count:
        document.close()
        raise OcrUnavailable(f"PDFium sees {len(document)} pages where pypdf sees {page_count}: "
                             "OCR text could land on the wrong page")
    return document


class PageOcr:
    """OCR of the pages of one PDF that lack a usable text layer; PDFium opens the document on
    first use, so a document whose text layer is whole never pays for it."""

    def __init__(self, content: bytes, passwords: tuple[str, ...], options: OcrOptions):
        self.content, self.passwords, self.options = content, passwords, options
        self.pages: list[int] = []  # read by OCR
        self.failed: dict[int, str] = {}  # page -> why OCR could not read it
        self._document = None

    def fill(self, pages: list[list[Line]]) -> dict[int, str]:
        """Replace, in place, the lines of each page without a usable text layer (empty and
        drawing an image, or made of unmapped characters) by the lines OCR reads; returns the
        pages it could not read and why."""
        started = time.monotonic()
        unavailable = None  # a reason that holds for every page
        for number, lines in enumerate(pages, start=1):
            if not unusable_text(lines):
                continue
            if unavailable is None and self.options.document_seconds and \
                    time.monotonic() - started > self.options.document_seconds:
                unavailable = (f"OCR stopped after {self.options.document_seconds:g} s for this document "
                               "(below silver.max_parse_seconds: raise it for long scans)")
            if unavailable is not None:
                self.failed[number] = unavailable
                continue
            try:
                if self._document is None:
                    self._document = open_document(self.content, self.passwords, len(pages))
                page = self._document[number - 1]
                if not lines and not draws_an_image(page):
                    continue  # a blank page, or vector drawing only
                check_tesseract(self.options.languages)  # only now: a blank page needs no Tesseract
                read = ocr_page(page, number, self.options)
            except OcrUnavailable as err:  # holds for every page: no Tesseract, no document
                unavailable = self.failed[number] = str(err)
                continue
            except Exception as err:  # noqa: BLE001 - a page OCR cannot read costs only itself
                self.failed[number] = f"{type(err).__name__}: {err}"
                continue
            if read:
                pages[number - 1] = read
                self.pages.append(number)
            else:
                self.failed[number] = "OCR found no text"
        if self._document is not None:
            self._document.close()
        return self.failed
