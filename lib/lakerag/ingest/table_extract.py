"""Ruled tables on PDF pages -> Markdown (pdfplumber's table finder), so that a table is one
paragraph, and one chunk, instead of its cells read as loose lines."""
from __future__ import annotations

import io
import re
from dataclasses import dataclass

CAPTION = re.compile(r"^(Table|Tab\.)\s*[\dIVX]+[.:]?(\s|$)", re.IGNORECASE)


@dataclass
class Table:
    """A ruled table found on a page: its box in PDF user space and its rows of cell text."""

    page: int
    x0: float
    x1: float
    top: float  # user space: larger is higher on the page
    bottom: float
    rows: list[list[str]]

    def contains(self, x: float, y: float) -> bool:
        """True if the point lies inside the table's box (2 pt of slack for glyph overhang)."""
        return self.x0 - 2 <= x <= self.x1 + 2 and self.bottom - 2 <= y <= self.top + 2


Box = tuple[float, float, float, float]  # x0, bottom, x1, top in PDF user space

# Operators that paint the current path; `n` ends it unpainted (a clipping path, usually).
PAINT = {b"S", b"s", b"f", b"F", b"f*", b"B", b"B*", b"b", b"b*"}


class Rules:
    """The straight rules and boxes a page's content stream paints, seen operator by operator
    (pypdf's visitor, which tracks the transformation matrix): enough to tell a ruled grid from
    a framed box before pdfplumber, which lays out the whole page in pure Python (0.1-0.3 s a
    page), is asked, and to find boxes that hold text (for the layout model's trigger). A 2 x 2
    ruled table has 3 distinct vertical and 3 horizontal rule positions; a framed code box or a
    stack of them has 2 verticals."""

    def __init__(self):
        self.vertical: set[int] = set()  # x of vertical rules, rounded to points
        self.horizontal: set[int] = set()
        # Painted rectangles at least 4 pt each way, (x0, bottom, x1, top) in user space; a
        # clipping rectangle (`re W n`) is not one.
        self.boxes: list[Box] = []
        self._path: list[Box] = []
        self._at: tuple[float, float] | None = None

    @staticmethod
    def _point(cm, x: float, y: float) -> tuple[float, float]:
        return cm[0] * x + cm[2] * y + cm[4], cm[1] * x + cm[3] * y + cm[5]

    def _segment(self, a: tuple[float, float], b: tuple[float, float]) -> None:
        (x0, y0), (x1, y1) = a, b
        if abs(x0 - x1) < 1 and abs(y0 - y1) >= 4:
            self.vertical.add(round(x0))
        elif abs(y0 - y1) < 1 and abs(x0 - x1) >= 4:
            self.horizontal.add(round(y0))

    def see(self, operator: bytes, operands: list, cm) -> None:
        """Record the rule a path operator draws (re: its edges, and its box once painted; m/l: a
        segment)."""
        try:
            if operator == b"re" and len(operands) == 4:
                x, y, w, h = (float(v) for v in operands)
                corners = [self._point(cm, x, y), self._point(cm, x + w, y), self._point(cm, x + w, y + h),
                           self._point(cm, x, y + h)]
                if abs(float(w)) < 2 or abs(float(h)) < 2:  # a filled thin rectangle is a rule
                    self._segment(corners[0], corners[2])
                else:
                    for a, b in zip(corners, corners[1:] + corners[:1]):
                        self._segment(a, b)
                    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
                    if max(xs) - min(xs) >= 4 and max(ys) - min(ys) >= 4:
                        self._path.append((min(xs), min(ys), max(xs), max(ys)))
            elif operator in PAINT or operator == b"n":
                if operator != b"n":
                    self.boxes.extend(self._path)
                self._path = []
            elif operator == b"m" and len(operands) == 2:
                self._at = self._point(cm, float(operands[0]), float(operands[1]))
            elif operator == b"l" and len(operands) == 2 and self._at is not None:
                end = self._point(cm, float(operands[0]), float(operands[1]))
                self._segment(self._at, end)
                self._at = end
        except (TypeError, ValueError):
            pass  # a malformed operand paints nothing we could use

    @staticmethod
    def _positions(values: set[int]) -> int:
        """Distinct positions, counting values within 3 pt of the previous one as one (a rule
        drawn as a thin filled rectangle has two edges; a box is often filled, then stroked)."""
        ordered = sorted(values)
        return sum(1 for i, v in enumerate(ordered) if i == 0 or v - ordered[i - 1] > 3)

    def grid(self) -> bool:
        """True if the rules could form a table of at least 2 x 2 cells."""
        return self._positions(self.vertical) >= 3 and self._positions(self.horizontal) >= 3


class PageTables:
    """Ruled tables of one PDF, read by pdfplumber on the pages that draw rules; the document is
    opened on first use."""

    def __init__(self, content: bytes, passwords: tuple[str, ...] = ()):
        self.content, self.passwords = content, passwords
        self._pdf = None

    def _open(self):
        import pdfplumber
        from pdfminer.pdfdocument import PDFPasswordIncorrect

        for password in ("", *self.passwords):
            try:
                return pdfplumber.open(io.BytesIO(self.content), password=password)
            except PDFPasswordIncorrect:
                continue
        raise PDFPasswordIncorrect("no configured password opens it")

    def find(self, number: int) -> list[Table]:
        """The tables of page `number` (1-based) with at least 2 rows of 2 filled cells and half
        their cells filled: a framed code box is one column, a plot's axes leave most cells empty
        or unmapped glyphs ("(cid:0)"), and neither is a table."""
        if self._pdf is None:
            self._pdf = self._open()
        page = self._pdf.pages[number - 1]
        height = float(page.height)
        found: list[Table] = []
        for table in page.find_tables():
            rows = [[cell or "" for cell in row] for row in table.extract()]
            cells = [cell for row in rows for cell in row]
            if sum(1 for row in rows if sum(1 for cell in row if cell.strip()) >= 2) < 2:
                continue
            if sum(1 for cell in cells if cell.strip()) < 0.5 * len(cells) or any("(cid:" in c for c in cells):
                continue
            x0, top, x1, bottom = table.bbox
            found.append(Table(number, float(x0), float(x1), height - float(top), height - float(bottom), rows))
        return found

    def close(self) -> None:
        """Release pdfplumber's document."""
        if self._pdf is not None:
            self._pdf.close()
