"""PDF bytes -> pages, paragraphs in reading order, and a section tree. Pure Python, no Spark.

pypdf gives positioned text runs through its visitor callback; from them we build lines, put
multi-column pages into reading order (column by column), cut lines into paragraphs, drop
running headers/footers, and assign paragraphs to sections taken from the PDF outline
(bookmarks) or, when there is none, from headings recognised by font size and weight.
"""
from __future__ import annotations

import io
import logging
import re
import statistics
import unicodedata
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterator

from pypdf import PdfReader
from pypdf.errors import LimitReachedError, PdfReadError
from pypdf.generic import ArrayObject, FloatObject

from lakerag.ingest.section_links import section_links
from lakerag.ingest.table_extract import CAPTION, Box, PageTables, Rules, Table
from lakerag.markdown_tables import is_table, markdown

# Bump when parsing output changes: section ids include it, so every document is re-parsed.
# 4: NFKC text, running header bands; 5: section links; 6: OCR; 7: form XObject text in page space
PARSER_VERSION = "pypdf-layout-7"

BULLET = re.compile(r"^\s*([•◦▪‣∙·\-–—*]|\(?\d{1,2}[.)]|\(?[a-z][.)])\s")
SENTENCE_END = re.compile(r"[.!?:;]['\")\]]?$")
BOLD_FONT = re.compile(r"bold|black|heavy|semibold|demi|cmbx|-bd\b|\bbd\b|,b\b", re.IGNORECASE)
WORD = re.compile(r"\w+", re.UNICODE)
# At most this many distinct repair warnings are kept per document.
MAX_WARNINGS = 20


class ParseFailure(Exception):
    """A document that cannot be parsed; `reason` is a machine-readable code."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass
class Run:
    """A piece of text drawn at one position in one font."""

    x: float
    y: float
    size: float
    bold: bool
    text: str
    x1: float  # estimated end of the run, from the font's glyph widths


@dataclass
class Line:
    """Runs on one baseline, in drawing order."""

    runs: list[Run]
    page: int  # 1-based

    @property
    def x0(self) -> float:
        return self.runs[0].x

    @cached_property
    def y(self) -> float:
        """Baseline of the line's largest text (a raised or lowered small run does not count)."""
        return max(self.runs, key=lambda run: run.size).y

    @property
    def size(self) -> float:
        return max(r.size for r in self.runs)

    @property
    def bold(self) -> bool:
        chars = Counter()
        for r in self.runs:
            chars[r.bold] += len(r.text.strip())
        return chars[True] > chars[False]

    @cached_property
    def text(self) -> str:
        """The line's text; a space goes where the pen moved right between two runs."""
        parts: list[str] = []
        previous: Run | None = None
        for run in self.runs:
            if previous is not None and run.x - previous.x1 > 0.15 * run.size:
                parts.append(" ")
            parts.append(run.text)
            previous = run
        return " ".join(compatible("".join(parts)).split())


@dataclass
class Paragraph:
    """Consecutive lines of one block, joined into text."""

    text: str
    page: int
    y: float  # baseline of the first line
    size: float
    bold: bool
    lines: int = 1
    # Its box on the page (baseline of the last line, left and right edge), to place a link.
    y_end: float = 0.0
    x0: float = 0.0
    x1: float = 0.0

    def contains(self, x: float, y: float) -> bool:
        """True if the point (user space) lies on the paragraph's lines."""
        return self.x0 - 2 <= x <= self.x1 + 2 and self.y_end - self.size <= y <= self.y + self.size


@dataclass
class Section:
    """A heading and the paragraphs under it, up to the next heading at any level."""

    title: str
    level: int  # 0 = text before the first heading
    heading_path: list[str]
    page_start: int
    origin: str  # outline | headings | front_matter
    paragraphs: list[Paragraph] = field(default_factory=list)
    first_paragraph: int = 0  # index of its heading (or first paragraph) in the document's paragraphs

    @property
    def page_end(self) -> int:
        return max([self.page_start] + [p.page for p in self.paragraphs])

    @property
    def text(self) -> str:
        return "\n\n".join(p.text for p in self.paragraphs)

    @property
    def paragraph_pages(self) -> list[int]:
        return [p.page for p in self.paragraphs]

    @property
    def table_boxes(self) -> list[list[float]]:
        """The box (x0, bottom, x1, top) of each table paragraph, in order."""
        return [[p.x0, p.y_end, p.x1, p.y] for p in self.paragraphs if is_table(p.text)]


@dataclass
class ParsedDocument:
    """What parsing a PDF yields."""

    title: str | None
    page_count: int
    pages_with_text: int
    outline_entries: int
    sections: list[Section]
    # What pypdf repaired or we skipped to read the document (broken xref, unreadable outline...).
    warnings: list[str] = field(default_factory=list)
    links: list = field(default_factory=list)  # section_links.SectionLink between the sections
    ocr_pages: list[int] | None = None  # pages read by OCR, 1-based; None: OCR was off
    layout_pages: list[int] | None = None  # pages read in the layout model's order; None: it was off
    parser_version: str = PARSER_VERSION  # with the OCR and table settings: see parser_version()


def valid_unicode(text: str) -> str:
    """`text` with surrogate pairs joined and lone surrogates replaced by U+FFFD.

    A font's ToUnicode map can name UTF-16 surrogates; Python keeps them as lone code points,
    which cannot be encoded as UTF-8, so one such glyph would fail the whole batch's write.
    """
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def compatible(text: str) -> str:
    """NFKC: ligatures and compatibility characters as plain letters ("\ufb01les" -> "files"), so
    search and the tokenizer match them with what people type."""
    return unicodedata.normalize("NFKC", text)


class _WarningCollector(logging.Handler):
    """Keeps the distinct messages pypdf logs while it repairs a document."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.messages and len(self.messages) < MAX_WARNINGS:
            self.messages.append(message)


@contextmanager
def pypdf_warnings() -> Iterator[list[str]]:
    """While active, pypdf's repair warnings go into the yielded list instead of the log."""
    logger = logging.getLogger("pypdf")
    collector = _WarningCollector()
    saved = logger.level, logger.propagate
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    logger.addHandler(collector)
    try:
        yield collector.messages
    finally:
        logger.removeHandler(collector)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def open_pdf(content: bytes, passwords: tuple[str, ...] = ()) -> PdfReader:
    """Open PDF bytes, decrypting with the empty password or one of `passwords`."""
    try:
        reader = PdfReader(io.BytesIO(content), strict=False)
    except LimitReachedError as err:
        raise ParseFailure("resource_limit", f"the file exceeds a pypdf safety limit: {err}") from err
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        raise ParseFailure("malformed", f"pypdf cannot read the file structure: {err}") from err
    if reader.is_encrypted:
        for password in ("", *passwords):
            try:
                if reader.decrypt(password):
                    return reader
            except Exception as err:  # noqa: BLE001 - pypdf raises many kinds here
                raise ParseFailure("encrypted", f"cannot decrypt: {err}") from err
        raise ParseFailure(
            "encrypted",
            "the PDF is password-protected and no configured password opens it: "
            "put its password in the LAKERAG_PDF_PASSWORDS environment variable (one per line; "
            "on Databricks from a secret scope)",
        )
    return reader


def _font_metrics(font) -> tuple[dict[int, float], float, bool]:
    """Glyph widths (per character code, in em), average width and boldness of a font dict."""
    widths: dict[int, float] = {}
    name = ""
    try:
        name = str(font.get("/BaseFont", ""))
        source = font
        if "/DescendantFonts" in font:  # composite font: one default width for all CIDs
            source = font["/DescendantFonts"][0].get_object()
            default = float(source.get("/DW", 1000)) / 1000
            return {}, default * 0.5, bool(BOLD_FONT.search(name))
        first = int(source.get("/FirstChar", 0))
        for offset, width in enumerate(source.get("/Widths", []) or []):
            if float(width) > 0:
                widths[first + offset] = float(width) / 1000
    except Exception:  # noqa: BLE001 - missing or odd metrics: fall back to an average
        widths = {}
    average = statistics.fmean(widths.values()) if widths else 0.5
    return widths, average, bool(BOLD_FONT.search(name))


IDENTITY = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


def _times(m: tuple[float, ...], n: tuple[float, ...]) -> tuple[float, ...]:
    """The PDF matrix product m x n (apply m, then n), both as (a, b, c, d, e, f)."""
    return (m[0] * n[0] + m[1] * n[2], m[0] * n[1] + m[1] * n[3], m[2] * n[0] + m[3] * n[2],
            m[2] * n[1] + m[3] * n[3], m[4] * n[0] + m[5] * n[2] + n[4], m[4] * n[1] + m[5] * n[3] + n[5])


def _form_space(name, cm, outer: tuple[tuple[float, ...], object]) -> tuple[tuple[float, ...], object]:
    """The matrix from the space of the form XObject `name` (drawn under `cm`, inside a form
    whose matrix to page space and resources are `outer`) to page space, and its resources."""
    matrix, resources = outer
    try:
        form = resources["/XObject"][name].get_object()
        own = tuple(float(v) for v in form.get("/Matrix", IDENTITY))
        inner = form["/Resources"].get_object() if "/Resources" in form else resources
    except Exception:  # noqa: BLE001 - an image, or a name we cannot resolve: nothing to map
        return matrix, resources
    return _times(_times(own, tuple(float(v) for v in cm)), matrix), inner


def page_runs(page, rules: Rules | None = None) -> list[Run]:
    """Positioned text runs of one page, in drawing order, with their estimated end; `rules`
    collects the page's straight rules and boxes on the way (for the table finder's check and
    the layout model's trigger). pypdf reports what a form XObject draws (a figure's labels, a
    plot) in the form's own space, so the forms being drawn are tracked and their text and
    rules mapped to page space."""
    runs: list[Run] = []
    fonts: dict[int, tuple[dict[int, float], float, bool]] = {}
    try:
        forms = [(IDENTITY, page["/Resources"].get_object())]
    except Exception:  # noqa: BLE001 - no resources: no forms to track
        forms = [(IDENTITY, {})]

    def visit(text, cm, tm, font, font_size):
        if not text or not text.strip():
            return
        # Text space -> user space: the run's origin is tm's translation mapped by cm.
        x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
        y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
        scale = abs(tm[3] * cm[3]) or abs(tm[0] * cm[0]) or 1.0
        size = float(font_size) * scale
        if id(font) not in fonts:
            fonts[id(font)] = _font_metrics(font) if hasattr(font, "get") else ({}, 0.5, False)
        widths, average, bold = fonts[id(font)]
        clean = valid_unicode(text).replace("\n", " ")
        end = x + size * sum(widths.get(ord(ch), average) for ch in clean)
        form = forms[-1][0]
        if form is not IDENTITY:
            scale = abs(form[0] * form[3] - form[1] * form[2]) ** 0.5  # a rotated form keeps its size
            width = (end - x) * scale
            x, y = form[0] * x + form[2] * y + form[4], form[1] * x + form[3] * y + form[5]
            size, end = size * scale, x + width
        runs.append(Run(x, y, round(size, 1), bold, clean, end))

    # The form a `Do` draws is entered at its first operator: pypdf reports the text pending in
    # the outer stream after the `Do` is seen, and an image has no operator at all.
    entering: list[tuple[tuple[float, ...], object]] = []

    def before(operator: bytes, operands: list, cm, tm) -> None:
        if entering:
            forms.append(entering.pop())
        _mark_word_gaps(operator, operands, cm, tm)
        if rules is not None:
            rules.see(operator, operands, cm if forms[-1][0] is IDENTITY else _times(tuple(cm), forms[-1][0]))
        if operator == b"Do" and operands:
            entering.append(_form_space(operands[0], cm, forms[-1]))

    def after(operator: bytes, operands: list, cm, tm) -> None:
        if operator == b"Do" and operands:
            if entering:
                entering.pop()  # an image, or a form that drew nothing
            elif len(forms) > 1:
                forms.pop()

    page.extract_text(visitor_text=visit, visitor_operand_before=before, visitor_operand_after=after)
    return runs


# Word gaps in TJ arrays, in thousandths of an em. pypdf inserts a space only for gaps over half
# the font's space width, which for some CID fonts (the Debian FAQ's CharisSIL) is wider than
# the gaps its justified lines use, so words came out glued ("Yes.Unstablehasthemost...").
# Kerning stays well under this threshold.
WORD_GAP = 150


def _mark_word_gaps(operator: bytes, operands: list, cm, tm) -> None:
    """Before pypdf handles a TJ, widen each word gap so that pypdf emits a space for it."""
    if operator != b"TJ" or not operands or not isinstance(operands[0], ArrayObject):
        return
    array = operands[0]
    for index, item in enumerate(array):
        if isinstance(item, (int, float)) and not isinstance(item, bool) and item <= -WORD_GAP:
            array[index] = FloatObject(-1000)


def group_lines(runs: list[Run], page_number: int) -> list[Line]:
    """Runs -> lines: a new line starts when the baseline moves, the pen jumps back left, or it
    jumps right over a gutter (content streams may draw two columns' lines interleaved)."""
    lines: list[Line] = []
    for run in runs:
        if lines:
            last = lines[-1].runs[-1]
            em = max(run.size, last.size, 1.0)
            same_baseline = abs(run.y - last.y) <= 0.45 * em
            if same_baseline and last.x - 1.0 <= run.x <= last.x1 + 1.5 * em:
                lines[-1].runs.append(run)
                continue
        lines.append(Line([run], page_number))
    return [line for line in lines if line.text]


def column_split(lines: list[Line], width: float) -> float | None:
    """x where a second column starts, if the page has two columns side by side, else None.

    Candidates are left edges shared by several lines in the middle of the page. One is a
    column start when the lines left of it end before it (a gutter) and most lines right of it
    have a left-hand line at about the same height (side by side, not a centred heading).
    """
    body = [line for line in lines if len(line.text) >= 15]
    counts = Counter(round(line.x0) for line in body if 0.3 * width <= line.x0 <= 0.7 * width)
    best: tuple[int, float] | None = None
    for start, n in counts.items():
        if n < 3 or (best is not None and n <= best[0]):
            continue
        edge = start - 2
        left = [line for line in body if line.x0 < edge]
        right = [line for line in body if line.x0 >= edge]
        if len(left) < 3 or len(right) < 3:
            continue
        crossing = sum(1 for line in left if line.runs[-1].x1 > edge + line.size)
        left_rows = {round(line.y / 4) for line in left}
        paired = sum(1 for line in right if any(round(line.y / 4) + d in left_rows for d in range(-3, 4)))
        if crossing <= 0.2 * len(left) and paired >= 0.5 * len(right):
            best = (n, edge)
    return best[1] if best else None


def reading_order(lines: list[Line], width: float) -> list[list[Line]]:
    """Lines -> flows (blocks read top to bottom): one flow per column on two-column pages."""
    split = column_split(lines, width)
    if split is None:
        return [lines]
    flows: list[list[Line]] = []
    left: list[Line] = []
    right: list[Line] = []

    def flush():
        for column in (left, right):
            if column:
                flows.append(sorted(column, key=lambda line: -line.y))
        left.clear()
        right.clear()

    for line in sorted(lines, key=lambda line: -line.y):
        if line.x0 >= split:
            right.append(line)
        elif _spans_gutter(line, split):
            flush()  # a full-width line (title, wide figure caption) separates column bands
            flows.append([line])
        else:
            left.append(line)
    flush()
    return flows


def _spans_gutter(line: Line, split: float) -> bool:
    """True if a left-starting line runs well into the right column (width estimated)."""
    return line.runs[-1].x1 > split + 2 * line.size


def join_segments(flow: list[Line]) -> list[Line]:
    """Re-join pieces of one visual line that group_lines split at a wide (justified) gap."""
    joined: list[Line] = []
    for line in flow:
        if joined:
            last = joined[-1]
            if abs(line.y - last.y) <= 0.45 * max(line.size, last.size) and line.x0 >= last.runs[-1].x:
                joined[-1] = Line(last.runs + line.runs, last.page)
                continue
        joined.append(line)
    return joined


def paragraphs_of_flow(flow: list[Line]) -> list[Paragraph]:
    """Cut a flow of lines into paragraphs at gaps, font changes, indents and bullets."""
    flow = join_segments(flow)
    gaps = [a.y - b.y for a, b in zip(flow, flow[1:]) if 0 < a.y - b.y < 3 * a.size]
    pitch = statistics.median(gaps) if gaps else None
    paragraphs: list[Paragraph] = []
    previous: Line | None = None
    for line in flow:
        text = line.text
        if previous is not None and not _starts_paragraph(previous, line, pitch):
            paragraph = paragraphs[-1]
            if paragraph.text.endswith("-") and text[:1].islower():
                paragraph.text = paragraph.text[:-1] + text  # re-join a hyphenated word
            else:
                paragraph.text = f"{paragraph.text} {text}"
            paragraph.lines += 1
            paragraph.y_end = line.y
            paragraph.x0, paragraph.x1 = min(paragraph.x0, line.x0), max(paragraph.x1, line.runs[-1].x1)
        else:
            paragraphs.append(Paragraph(text, line.page, line.y, line.size, line.bold, y_end=line.y, x0=line.x0,
                                        x1=line.runs[-1].x1))
        previous = line
    return paragraphs


def _starts_paragraph(previous: Line, line: Line, pitch: float | None) -> bool:
    gap = previous.y - line.y
    em = max(line.size, 1.0)
    if gap <= 0 or gap > (1.45 * pitch if pitch else 2.0 * em):
        return True
    if abs(line.size - previous.size) > 0.8 or line.bold != previous.bold:
        return True  # headings and callouts in another font stand alone
    if BULLET.match(line.text):
        return True
    if abs(line.x0 - previous.x0) > 1.5 * em:
        return True  # a box or block quote with its own margin
    indented = line.x0 > previous.x0 + 0.5 * em
    return indented and bool(SENTENCE_END.search(previous.text))


def is_contents_page(lines: list[Line]) -> bool:
    """True for a table-of-contents (or back-of-book index) page: many dot leaders, or most
    lines end with a page number. Its entries would otherwise match every query that names a
    heading."""
    if len(lines) < 8:
        return False
    leaders = sum(1 for line in lines if re.search(r"(\.\s?){5,}", line.text))
    numbered = sum(1 for line in lines if re.search(r"\D\s[\divxlc]{1,4}$", line.text.lower()))
    return leaders >= 0.3 * len(lines) or numbered >= 0.6 * len(lines)


def _pitch(pages: list[list[Line]]) -> float:
    """The document's usual distance between consecutive baselines."""
    gaps: list[float] = []
    for page in pages:
        heights = sorted({round(line.y, 1) for line in page}, reverse=True)
        gaps.extend(upper - lower for upper, lower in zip(heights, heights[1:]))
    return statistics.median(gaps) if gaps else 12.0


def running_band_lines(pages: list[list[Line]]) -> set[int]:
    """ids of running headers and footers whose text varies from page to page ("CHAPTER 9. ...
    9.2. MUST I ...", "Chapter 7: R Miscellanea 35"): the lines at a page's top (or bottom)
    baseline when many pages have their top (bottom) line at that height and it is set apart
    from the rest of the page by more than 1.6 line pitches. A body whose first line starts at
    the same height on every page is kept: its next line follows at one pitch."""
    pitch = _pitch(pages)
    found: set[int] = set()
    for extreme in (max, min):
        edges: list[tuple[float, list[Line], float]] = []  # (height, lines on it, gap to the rest)
        for page in pages:
            if len(page) < 2:
                continue
            height = extreme(line.y for line in page)
            band = [line for line in page if abs(line.y - height) <= 1.0]
            rest = [abs(line.y - height) for line in page if abs(line.y - height) > 1.0]
            if rest:
                edges.append((height, band, min(rest)))
        counts = Counter(round(height / 3) for height, _, _ in edges)
        threshold = max(5, 0.3 * len(edges))  # a running header runs over several pages
        for height, band, gap in edges:
            if counts[round(height / 3)] >= threshold and gap > 1.6 * pitch:
                found.update(id(line) for line in band)
    return found


def repeating_lines(pages: list[list[Line]]) -> set[int]:
    """ids of running headers/footers whose text (digits aside) repeats at one height on half
    the pages, and of bare page numbers."""
    def key(line: Line) -> tuple[str, int]:
        return re.sub(r"\d+", "#", line.text.lower()), round(line.y / 3)

    seen = Counter(k for page in pages for k in {key(line) for line in page})
    threshold = max(3, len(pages) // 2)
    return {id(line) for page in pages for line in page
            if seen[key(line)] >= threshold or re.fullmatch(r"[\divxlc]{1,4}", line.text)}


def drop_running_lines(pages: list[list[Line]]) -> list[list[Line]]:
    """Remove running headers/footers (repeating text, or varying text in a running band), bare
    page numbers, and table-of-contents pages."""
    furniture = repeating_lines(pages) | running_band_lines(pages)
    kept = [[line for line in page if id(line) not in furniture] for page in pages]
    return [[] if is_contents_page(page) else page for page in kept]


@dataclass
class PageLink:
    """A link annotation to a place in the same document: where it is, the words under it, and
    its destination (1-based page; left and top in user space, None where the link gives none)."""

    page: int
    x: float  # centre of the annotation's rectangle
    y: float
    text: str
    target_page: int
    target_left: float | None = None
    target_top: float | None = None


def _text_in(runs: list[Run], rect: list[float]) -> str:
    """The words drawn inside a rectangle (x0, y0, x1, y1), a run cut in proportion to its width."""
    x0, y0, x1, y1 = min(rect[0], rect[2]), min(rect[1], rect[3]), max(rect[0], rect[2]), max(rect[1], rect[3])
    parts = []
    for run in runs:
        if not (y0 - 2 <= run.y <= y1 + 2) or run.x1 <= x0 or run.x >= x1:
            continue
        width = max(run.x1 - run.x, 1e-6)
        start = max(0, int((x0 - run.x) / width * len(run.text)))
        end = min(len(run.text), int(round((x1 - run.x) / width * len(run.text))) + 1)
        parts.append(run.text[start:end])
    return " ".join(compatible(" ".join(parts)).split())


class _Destinations:
    """Resolves a link annotation's destination (explicit array, named, or a GoTo action) to
    (1-based page, left, top); other actions (URIs, other files) resolve to None."""

    def __init__(self, reader: PdfReader):
        self.reader = reader
        self._page_of = {page.indirect_reference.idnum: number
                         for number, page in enumerate(reader.pages, start=1) if page.indirect_reference}
        self._named = None

    def _explicit(self, array) -> tuple[int, float | None, float | None] | None:
        if not isinstance(array, ArrayObject) or not array:
            return None
        page = self._page_of.get(getattr(array[0], "idnum", None))
        if page is None:
            return None
        xyz = len(array) > 3 and str(array[1]) == "/XYZ"
        return page, _number(array[2]) if xyz else None, _number(array[3]) if xyz else None

    def resolve(self, annotation) -> tuple[int, float | None, float | None] | None:
        dest = annotation.get("/Dest")
        if dest is None and "/A" in annotation:
            action = annotation["/A"].get_object()
            dest = action.get("/D") if action.get("/S") == "/GoTo" else None
        if dest is None:
            return None
        dest = dest.get_object() if hasattr(dest, "get_object") else dest
        if isinstance(dest, ArrayObject):
            return self._explicit(dest)
        if self._named is None:
            self._named = self.reader.named_destinations
        named = self._named.get(str(dest))
        if named is None:
            return None
        page = self._page_of.get(getattr(named.page, "idnum", None))
        return (page, _number(named.get("/Left")), _number(named.get("/Top"))) if page else None


def _number(value) -> float | None:
    """A PDF number as a float; None for null or anything else."""
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def page_links(page, number: int, runs: list[Run], destinations: _Destinations) -> list[PageLink]:
    """The page's link annotations that point into the document, with the words under them."""
    links = []
    for annotation in page.get("/Annots") or []:
        annotation = annotation.get_object()
        if annotation.get("/Subtype") != "/Link" or "/Rect" not in annotation:
            continue
        target = destinations.resolve(annotation)
        if target is None:
            continue
        rect = [float(v) for v in annotation["/Rect"]]
        links.append(PageLink(number, (rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2, _text_in(runs, rect),
                              *target))
    return links


def extract_paragraphs(reader: PdfReader, warnings: list[str] | None = None,
                       links: list[PageLink] | None = None, ocr=None,
                       tables: PageTables | None = None, layout=None) -> tuple[list[Paragraph], int]:
    """All paragraphs of a document in reading order, and the number of pages with text;
    pages that cannot be read are skipped and named in `warnings`; `links` receives the pages'
    internal link annotations; pages without a usable text layer are read by `ocr` (an
    ocr.PageOcr, which records the pages it read and why others failed) when given; ruled
    tables found by `tables` become one Markdown paragraph each, their cells gone from the lines;
    pages the heuristic reader is unsure of are read in the order of the regions `layout` (a
    layout.PageLayout) finds."""
    pages: list[list[Line]] = []
    found: list[list[Table]] = []  # per page
    boxes: list[list[Box]] = []  # per page: painted rectangles
    table_errors: list[str] = []
    widths: list[float] = []
    errors: dict[int, str] = {}  # page number -> why pypdf could not read it
    link_errors: list[str] = []
    destinations = _Destinations(reader) if links is not None else None
    for number, page in enumerate(reader.pages, start=1):
        try:
            rules = Rules() if tables is not None or layout is not None else None
            runs = page_runs(page, rules)
            pages.append(group_lines(runs, number))
        except LimitReachedError as err:  # a decompression bomb or similar: reject the file
            raise ParseFailure("resource_limit", f"page {number} exceeds a pypdf safety limit: {err}") from err
        except Exception as err:  # noqa: BLE001 - one bad page must not lose the others
            errors[number] = str(err)
            pages.append([])
            runs = []
        if destinations is not None:
            try:
                links.extend(page_links(page, number, runs, destinations))
            except Exception as err:  # noqa: BLE001 - broken annotations lose the links, not the page
                link_errors.append(f"page {number}: {err}")
        widths.append(float(page.mediabox.width))
        page_tables: list[Table] = []
        if tables is not None and pages[-1] and rules.grid():
            try:
                page_tables = tables.find(number)
            except Exception as err:  # noqa: BLE001 - a table we cannot read stays as lines
                table_errors.append(f"page {number}: {type(err).__name__}: {err}")
            pages[-1] = [line for line in pages[-1]
                         if not any(table.contains(line.x0, line.y) for table in page_tables)]
        found.append(page_tables)
        boxes.append(rules.boxes if rules is not None else [])
    if tables is not None:
        tables.close()
    if table_errors and warnings is not None:
        warnings.append(f"read the tables of {len(table_errors)} page(s) as text: " + "; ".join(table_errors[:5]))
    if ocr is not None:
        failed = ocr.fill(pages)
        errors = {number: why for number, why in errors.items() if number not in ocr.pages}
        if failed and warnings is not None:
            warnings.append(f"OCR did not read {len(failed)} page(s): "
                            + "; ".join(f"page {n}: {why}" for n, why in list(failed.items())[:5]))
    if errors and len(errors) == len(pages):
        raise ParseFailure("malformed", f"no page could be read (page 1: {errors[1]})")
    if errors and warnings is not None:
        warnings.append(f"skipped {len(errors)} unreadable page(s): "
                        + "; ".join(f"page {n}: {why}" for n, why in list(errors.items())[:5]))
    if link_errors and warnings is not None:
        warnings.append(f"skipped the links of {len(link_errors)} page(s): " + "; ".join(link_errors[:5]))
    pages = drop_running_lines(pages)
    paragraphs: list[Paragraph] = []
    for number, (lines, width, page_tables, page_boxes) in enumerate(zip(pages, widths, found, boxes), start=1):
        flows = layout.flows(number, lines, len(pages), page_boxes, width) if layout is not None else None
        if flows is None:
            flows = reading_order(lines, width)
        page_paragraphs = [paragraph for flow in flows for paragraph in paragraphs_of_flow(flow)]
        for table in page_tables:
            place_table(page_paragraphs, table)
        paragraphs.extend(page_paragraphs)
    if layout is not None:
        layout.close()
        if layout.failed and warnings is not None:
            warnings.append(f"kept the heuristic reading order of {len(layout.failed)} uncertain page(s): "
                            + "; ".join(f"page {n}: {why}" for n, why in list(layout.failed.items())[:5]))
    return paragraphs, sum(1 for lines in pages if lines)


def place_table(paragraphs: list[Paragraph], table: Table) -> None:
    """Insert a table, as one Markdown paragraph, before the first paragraph of its page (reading
    order) that starts below its top in its columns; a "Table N" caption right above or below
    it becomes the table's first line."""
    at = next((i for i, p in enumerate(paragraphs) if p.y < table.top and p.x0 < table.x1 and p.x1 > table.x0),
              len(paragraphs))
    caption = ""
    for i in (at - 1, at):
        if 0 <= i < len(paragraphs) and CAPTION.match(paragraphs[i].text):
            caption = paragraphs.pop(i).text
            at = min(at, i)  # a caption above moves the table up by one
            break
    near = paragraphs[at - 1] if at > 0 else paragraphs[at] if paragraphs else None
    paragraphs.insert(at, Paragraph(markdown(table.rows, caption), table.page, table.top,
                                    near.size if near else 10.0, False, lines=len(table.rows) + 1,
                                    y_end=table.bottom, x0=table.x0, x1=table.x1))


def _norm(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


@dataclass
class OutlineEntry:
    title: str
    level: int
    page: int  # 1-based
    top: float | None


def outline_entries(reader: PdfReader, warnings: list[str] | None = None) -> list[OutlineEntry]:
    """The outline (bookmarks) flattened in document order, entries without a page skipped;
    an outline that cannot be read gives no entries and a line in `warnings`."""
    entries: list[OutlineEntry] = []

    def walk(items, level):
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # noqa: BLE001 - broken destinations are common
                continue
            if page is None or page < 0:
                continue
            top = item.get("/Top") if hasattr(item, "get") else None
            title = " ".join(compatible(valid_unicode(str(item.title or ""))).split())
            if title:
                entries.append(OutlineEntry(title, level, page + 1, float(top) if top is not None else None))

    try:
        walk(reader.outline, 1)
    except Exception as err:  # noqa: BLE001 - a broken outline falls back to font heuristics
        if warnings is not None:
            warnings.append(f"outline ignored, sections from font headings instead: {err}")
        return []
    return entries


def sections_from_outline(entries: list[OutlineEntry], paragraphs: list[Paragraph], doc_title: str) -> list[Section]:
    """Assign paragraphs to outline entries: each entry starts at its heading on its page."""
    starts: list[int] = []
    heading_at: set[int] = set()
    cursor = 0
    for entry in entries:
        start, heading_length = _find_entry_start(entry, paragraphs, cursor)
        heading_at.update(range(start, start + heading_length))
        starts.append(start)
        cursor = start + heading_length
    sections = [Section(doc_title, 0, [doc_title], 1, "front_matter")]
    path: list[str] = []
    for entry, start in zip(entries, starts):
        path = path[: entry.level - 1] + [entry.title]
        sections.append(Section(entry.title, entry.level, list(path), entry.page, "outline", first_paragraph=start))
    bounds = starts + [len(paragraphs)]
    sections[0].paragraphs = paragraphs[: bounds[0]]
    for index, section in enumerate(sections[1:]):
        section.paragraphs = [
            paragraphs[i] for i in range(bounds[index], bounds[index + 1]) if i not in heading_at
        ]
    return [s for s in sections if s.origin != "front_matter" or s.paragraphs]


# "3.1.3 ", "II.2. ", "Chapter 4 ": numbering that a heading may carry and its outline title not.
NUMBERING = re.compile(r"^\s*(chapter\s+)?[\dIVXivx]+(\.[\dIVXivx]+)*\.?\s+", re.IGNORECASE)


def _heading_length(title: str, paragraphs: list[Paragraph], index: int) -> int:
    """How many paragraphs from `index` spell out heading `title` (0 if they do not)."""
    wanted = _norm(NUMBERING.sub("", title))
    if not wanted:
        return 0
    seen = ""
    for count, paragraph in enumerate(paragraphs[index: index + 4], start=1):
        text = NUMBERING.sub("", paragraph.text) if count == 1 else paragraph.text
        seen = f"{seen} {_norm(text)}".strip()
        if wanted in seen and len(seen) <= len(wanted) + 24:
            return count
        if not wanted.startswith(seen):
            return 0
    return 0


def _find_entry_start(entry: OutlineEntry, paragraphs: list[Paragraph], cursor: int) -> tuple[int, int]:
    """(first paragraph of `entry`, how many paragraphs its heading spans), never before `cursor`."""
    on_page = [i for i in range(cursor, len(paragraphs)) if paragraphs[i].page == entry.page]
    for i in on_page:
        length = _heading_length(entry.title, paragraphs, i)
        if length:
            return i, length
    if entry.top is not None:
        for i in on_page:
            if paragraphs[i].y <= entry.top + 2:
                return i, 0
    if on_page:
        return on_page[0], 0
    later = [i for i in range(cursor, len(paragraphs)) if paragraphs[i].page > entry.page]
    return (later[0] if later else len(paragraphs)), 0


def sections_from_headings(paragraphs: list[Paragraph], doc_title: str) -> list[Section]:
    """Sections from paragraphs that look like headings: larger or bold short lines."""
    sizes = Counter()
    for p in paragraphs:
        sizes[round(p.size * 2) / 2] += len(p.text)
    body = sizes.most_common(1)[0][0] if sizes else 10.0

    def heading_size(p: Paragraph) -> float | None:
        words = len(p.text.split())
        if p.lines > 2 or words == 0 or words > 14 or p.text.endswith((".", ",", ";")):
            return None
        if not any(ch.isalpha() for ch in p.text):
            return None
        size = round(p.size * 2) / 2
        if size >= body + 1:
            return size
        if p.bold and size >= body - 1.5:
            return body  # bold at body size: the lowest heading level
        return None

    heading_sizes = {p_size for p in paragraphs if (p_size := heading_size(p)) is not None}
    levels = {size: rank for rank, size in enumerate(sorted(heading_sizes, reverse=True), start=1)}
    sections = [Section(doc_title, 0, [doc_title], 1, "front_matter")]
    path: list[str] = []
    for index, p in enumerate(paragraphs):
        size = heading_size(p)
        if size is None:
            sections[-1].paragraphs.append(p)
            continue
        level = levels[size]
        path = path[: level - 1] + [p.text]
        sections.append(Section(p.text, level, list(path), p.page, "headings", first_paragraph=index))
    return [s for s in sections if s.origin != "front_matter" or s.paragraphs]


def document_title(reader: PdfReader) -> str | None:
    """The title from the document information dictionary, if it has a useful one."""
    try:
        title = (reader.metadata or {}).get("/Title")
    except Exception:  # noqa: BLE001 - broken info dictionaries are common
        return None
    title = " ".join(compatible(valid_unicode(str(title or ""))).split())
    return title or None


def declared_page_count(reader: PdfReader) -> int | None:
    """/Count of the page tree's root, read without walking the tree (None if unreadable)."""
    try:
        return int(reader.trailer["/Root"]["/Pages"]["/Count"])
    except Exception:  # noqa: BLE001 - missing or broken: the walk decides
        return None


def parser_version(ocr=None, tables: bool = False, layout: bool = False) -> str:
    """PARSER_VERSION with the settings that change what a parse yields, so that a document
    parsed with OCR off (or another resolution or language, or without tables or the layout
    model, or by another Tesseract) is parsed again once they change."""
    parts = [PARSER_VERSION]
    if ocr is not None:
        from lakerag.ingest.ocr import tesseract_version  # ocr imports this module

        parts.append(f"ocr{ocr.dpi}-{ocr.languages}-tesseract{tesseract_version()}")
    return "+".join(parts + (["tables"] if tables else []) + (["layout"] if layout else []))


def parse_pdf(content: bytes, file_name: str, passwords: tuple[str, ...] = (), max_pages: int = 0,
              ocr=None, tables: bool = False, layout: bool = False) -> ParsedDocument:
    """Parse PDF bytes into sections with paragraphs; raises ParseFailure with a reason.

    max_pages > 0 rejects longer documents before their pages are read; `ocr` (ocr.OcrOptions)
    reads the pages without a usable text layer, None leaves them empty; `tables` turns ruled
    tables into Markdown paragraphs; `layout` reads the pages the heuristic reader is unsure of
    (layout.uncertain: three or more columns, a box beside text, drawn out of order) in the order
    of a layout model's regions.
    """
    with pypdf_warnings() as warnings:
        document = _parse(content, file_name, passwords, max_pages, warnings, ocr, tables, layout)
    document.warnings = warnings
    document.parser_version = parser_version(ocr, tables, layout)
    return document


def _too_many_pages(count: int, max_pages: int) -> ParseFailure:
    return ParseFailure("too_many_pages", f"{count} pages, over silver.max_pages={max_pages}: "
                                          "split the document or raise the limit in conf/")


def _parse(content: bytes, file_name: str, passwords: tuple[str, ...], max_pages: int,
           warnings: list[str], ocr_options=None, tables: bool = False, layout: bool = False) -> ParsedDocument:
    reader = open_pdf(content, passwords)
    declared = declared_page_count(reader)
    if max_pages and declared is not None and declared > max_pages:
        raise _too_many_pages(declared, max_pages)
    try:
        page_count = len(reader.pages)
    except LimitReachedError as err:
        raise ParseFailure("resource_limit", f"the page tree exceeds a pypdf safety limit: {err}") from err
    except Exception as err:  # noqa: BLE001
        raise ParseFailure("malformed", f"the page tree cannot be read: {err}") from err
    if max_pages and page_count > max_pages:
        raise _too_many_pages(page_count, max_pages)
    if page_count == 0:
        raise ParseFailure("no_pages", "the document has no pages")
    page_links: list[PageLink] = []
    ocr = None
    if ocr_options is not None:
        from lakerag.ingest.ocr import PageOcr  # it builds this module's Lines

        ocr = PageOcr(content, passwords, ocr_options)
    page_layout = None
    if layout:
        from lakerag.ingest.layout import PageLayout  # it builds this module's Lines

        page_layout = PageLayout(content, passwords)
    paragraphs, pages_with_text = extract_paragraphs(reader, warnings, page_links, ocr,
                                                     PageTables(content, passwords) if tables else None, page_layout)
    if not paragraphs:
        if ocr is None:
            why = "scanned images? silver.ocr is off"
        elif ocr.failed:
            why = "OCR read none either: " + "; ".join(f"page {n}: {w}" for n, w in list(ocr.failed.items())[:3])
        else:
            why = "and no page draws an image to OCR"
        raise ParseFailure("no_text", f"no extractable text on any of {page_count} page(s) ({why})")
    title = document_title(reader) or file_name
    entries = outline_entries(reader, warnings)
    if entries:
        sections = sections_from_outline(entries, paragraphs, title)
    else:
        sections = sections_from_headings(paragraphs, title)
    links = section_links(sections, paragraphs, page_links)
    return ParsedDocument(title, page_count, pages_with_text, len(entries), sections, links=links,
                          ocr_pages=ocr.pages if ocr is not None else None,
                          layout_pages=page_layout.pages if page_layout is not None else None)
