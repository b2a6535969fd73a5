"""The layout model for pages the heuristic reader is unsure of: a three-column page's paragraphs
come out in order, and so do a callout box's beside the text and a page drawn out of order;
one- and two-column pages never pay for the model, and a page the model cannot read keeps the
heuristic order and says why."""
from __future__ import annotations

from lakerag.ingest import layout
from lakerag.ingest.layout import column_count, uncertain, xy_cut
from lakerag.ingest.pdf_parse import Line, Run, parse_pdf
from tests.bad_inputs import callout_pdf, good, shuffled_pdf, three_column_pdf

COLUMNS = [[f"Station {c} paragraph {p}: the wind came from the west and the sensors logged it every ten "
            "minutes for the whole week." for p in (1, 2)] for c in (1, 2, 3)]
IN_ORDER = [f"Station {c} paragraph {p}" for c in (1, 2, 3) for p in (1, 2)]


def opening_words(document) -> list[str]:
    return [p.text[:len("Station 1 paragraph 1")] for s in document.sections for p in s.paragraphs
            if p.text.startswith("Station")]


def line(x0: float, y: float, *pieces: tuple[float, str]) -> Line:
    """A line of 10-pt runs: the first at x0, then each (x, text)."""
    runs = [Run(x, y, 10.0, False, text, x + 5.0 * len(text)) for x, text in ((x0, ""), *pieces) if text]
    return Line(runs, 1)


def test_a_three_column_pages_paragraphs_come_out_in_order_with_the_layout_model():
    pdf = three_column_pdf(COLUMNS)  # drawn row by row across the columns
    heuristic = parse_pdf(pdf, "stations.pdf")
    assert opening_words(heuristic) != IN_ORDER  # the baseline: two columns at most
    document = parse_pdf(pdf, "stations.pdf", layout=True)
    assert opening_words(document) == IN_ORDER
    assert document.layout_pages == [1] and document.parser_version.endswith("+layout")
    assert document.sections[0].title == "Field notes from three stations"


def test_a_one_column_page_never_runs_the_model(monkeypatch):
    monkeypatch.setattr(layout, "page_regions", lambda page: 1 / 0)
    document = parse_pdf(good(), "good.pdf", layout=True)
    assert document.layout_pages == [] and document.warnings == []


def test_a_page_the_model_cannot_read_keeps_the_heuristic_order_and_says_why(monkeypatch):
    def broken(page):
        raise RuntimeError("onnx session died")

    monkeypatch.setattr(layout, "page_regions", broken)
    document = parse_pdf(three_column_pdf(COLUMNS), "stations.pdf", layout=True)
    assert document.layout_pages == []
    assert document.warnings == ["kept the heuristic reading order of 1 uncertain page(s): "
                                 "page 1: RuntimeError: onnx session died"]
    # the heuristic order: columns 2 and 3 read across as one
    assert opening_words(document) == ["Station 1 paragraph 1", "Station 1 paragraph 2",
                                       "Station 2 paragraph 1", "Station 2 paragraph 2"]


def test_justified_lines_are_one_column_and_three_side_by_side_are_three():
    # one column, each line split by group_lines at a different wide word gap
    justified = [line(72, 700 - 12 * i, (72, "a justified line of"), (200 + 15 * i, "text that goes on")) for i in range(8)]
    assert column_count(justified) == 1 and uncertain(justified) is None
    three = [line(0, 700 - 12 * i, (x, "column text here")) for i in range(6) for x in (72, 237, 402)]
    assert column_count(three) == 3 and uncertain(three) == "3 columns"


def test_xy_cut_reads_columns_left_to_right_under_a_full_width_title():
    boxes = [  # (x0, bottom, x1, top), user space
        (300, 500, 400, 600),  # 0: right column, top
        (72, 620, 400, 650),   # 1: title over both columns
        (72, 500, 180, 600),   # 2: left column, top
        (72, 380, 180, 480),   # 3: left column, bottom
        (300, 380, 400, 480),  # 4: right column, bottom
    ]
    assert xy_cut(boxes, list(range(5))) == [1, 2, 3, 0, 4]
    # a full-width figure between two bands of columns ends the first band
    boxes += [(72, 300, 400, 360),  # 5: figure
              (72, 200, 180, 280),  # 6: left column under it
              (300, 200, 400, 280)]  # 7: right column under it
    assert xy_cut(boxes, list(range(8))) == [1, 2, 3, 0, 4, 5, 6, 7]


BODY = [f"Station 1 paragraph {p}: the wind came from the west, the sensors logged it every ten minutes, "
        "rain fell after dark and the river rose." for p in (1, 2, 3)]


def paragraph_texts(document) -> list[str]:
    return [p.text.replace("\n", " ") for s in document.sections for p in s.paragraphs]


def test_a_callout_box_beside_the_text_is_read_as_its_own_block():
    callout = [f"Station 9 paragraph {p}: keep the logger dry and check it." for p in (1, 2)]
    pdf = callout_pdf(BODY, callout)  # drawn row by row across the box and the text beside it
    heuristic = paragraph_texts(parse_pdf(pdf, "callout.pdf"))
    assert heuristic[0].startswith("Station 9 paragraph 1: Station 1 paragraph 1: the wind came from the keep")
    document = parse_pdf(pdf, "callout.pdf", layout=True)
    assert paragraph_texts(document) == callout + BODY and document.layout_pages == [1]


def test_a_page_drawn_out_of_order_is_read_top_to_bottom():
    pdf = shuffled_pdf(BODY, [2, 0, 1])
    assert paragraph_texts(parse_pdf(pdf, "shuffled.pdf")) == [BODY[2], BODY[0], BODY[1]]
    assert paragraph_texts(parse_pdf(pdf, "shuffled.pdf", layout=True)) == BODY


def test_why_the_heuristic_reader_is_unsure():
    body = [line(72, 700 - 12 * i, (72, "one column of body text")) for i in range(8)]
    assert uncertain(body, [], 612) is None
    # two lines in a painted box, two more beside it at its height
    boxed = body + [line(300, 700 - 12 * i, (300, "a sidebar line")) for i in range(2)]
    assert uncertain(boxed, [(290, 680, 400, 715)], 612) == "a box beside text at (290, 680, 400, 715)"
    assert uncertain(boxed, [(60, 600, 560, 720)], 612) is None  # a frame around all of it
    # the last two lines drawn first: the stream goes back up the page once
    assert uncertain(body[6:] + body[:6], [], 612) == "drawn out of order (1 jump up the page)"


def test_a_line_goes_to_the_region_that_holds_it_unless_that_only_doubles_smaller_ones():
    from lakerag.ingest.layout import Region, flows_by_regions

    column = [line(60, y, (60, f"column line at {y}")) for y in (690, 555, 440, 200)]
    label = line(160, 500, (160, "figure label"))
    regions = [Region("text", 0.9, 50, 100, 400, 700), Region("figure", 0.9, 150, 450, 300, 550)]
    # the lines just above and below the figure stay in their column
    flows = flows_by_regions(column + [label], regions)
    assert sorted([[l.y for l in flow] for flow in flows]) == [[500], [690, 555, 440, 200]]
    # a low-scored text box over two paragraphs does not take the first one's short last line
    first = [line(240, y, (240, f"first paragraph {y}")) for y in (710, 698, 686)] + [line(240, 674, (240, "end."))]
    second = [line(240, y, (240, f"second paragraph {y}")) for y in (650, 638)]
    regions = [Region("text", 0.9, 240, 685, 425, 717), Region("text", 0.5, 239, 625, 425, 717),
               Region("text", 0.8, 239, 630, 425, 657)]
    assert [[l.y for l in flow] for flow in flows_by_regions(first + second, regions)] == [[710, 698, 686, 674],
                                                                                         [650, 638]]
