"""Benchmark: OCR accuracy and speed on scans of the corpus's manuals (issue 20).

For each manual, takes --pages pages with text, evenly spread, renders them as a scan
(--scan-dpi, grayscale, JPEG inside an image-only PDF; clean renders, with none of a real scan's
skew, noise or blur: a best case), reads it with the parser's OCR step
(`ocr.PageOcr`, what `parse_pdf(..., ocr=...)` runs: PDFium render + Tesseract -> lines, with the
silver.ocr_* defaults) and compares each page's OCR'd lines with the original page's text layer
as the parser reads it (pypdf runs -> lines):

- CER: Levenshtein distance over the whitespace-normalised text, divided by the original's length
  (reading order counts: a line read out of order costs its characters);
- order-free word error rate: word edits between the sorted words / the original's words, which
  reading order does not affect;
- pages/s of that step, one process.

The baseline is the parser without OCR, which reads nothing from such a PDF (`no_text`).

Tables: --tables generated pages (tests/bad_inputs.ruled_table_pdf: 2-5 columns, 2-7 body rows,
words, numbers and units, half with a "Table N:" caption) parsed with silver.tables on; cell
accuracy is the share of known cells whose Markdown cell (whitespace-normalised) equals them, a
table that is not found counting all its cells wrong. The baseline is the parser with tables
off, where no cell is a cell (0%).

Reading order: --layout-pages generated pages of each kind the heuristic reader is unsure of
(tests/bad_inputs): a full-width title over three columns of 1-3 paragraphs each
(three_column_pdf, drawn row by row across the columns, as some layout programs write them); a
shaded, framed callout box of 1-2 paragraphs with 2-4 body paragraphs beside and below it
(callout_pdf, drawn row by row across box and text); one column of 3-6 paragraphs drawn in a
shuffled order (shuffled_pdf). Each is parsed with silver.layout on and off; the share of
paragraphs in the right order is the share whose predecessor in the output (by their "Station c
paragraph p" labels, in the order they appear) is their predecessor on the page, the callout and
the body counting as blocks that may come in either order; a paragraph is intact when its words
come out together in one stretch of the output (a box's lines read into the text beside it
break both). The baseline is the heuristic reader
(silver.layout off). The corpus's pages that reach the layout model in silver are listed with
the reason the trigger gives. On three pages of the two-column guides (data/corpus/
two-column, one page each) the paragraph openings were written down by hand in reading order
(GUIDE_ORDER); the page's paragraphs are read by the heuristic reader and, forced, by the layout
model's regions (the guides' pages never reach it in silver: none trips a trigger), and
an opening is in order when the opening found before it in the text is its predecessor by hand
(one not found counts wrong).

    .venv/bin/python bench/extraction.py [--pages 10] [--scan-dpi 300] [--tables 20] [--layout-pages 30]
"""
from __future__ import annotations

import argparse
import io
import itertools
import os
import platform
import random
import re
import unicodedata
import statistics
import sys
import time
from pathlib import Path

import pypdfium2 as pdfium
from rapidfuzz.distance import Levenshtein

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.bad_inputs builds the table pages
from common import CORPUS, write_result  # noqa: E402
from tests.bad_inputs import callout_pdf, ruled_table_pdf, shuffled_pdf, three_column_pdf  # noqa: E402

from lakerag.ingest.layout import PageLayout, flows_by_regions, page_regions  # noqa: E402
from lakerag.ingest.ocr import OcrOptions, PageOcr  # noqa: E402
from lakerag.ingest.pdf_parse import (ParseFailure, extract_paragraphs, group_lines, open_pdf,  # noqa: E402
                                      page_runs, paragraphs_of_flow, parse_pdf, reading_order)
from lakerag.markdown_tables import is_table  # noqa: E402
from lakerag.settings import Settings  # noqa: E402

MANUALS = ("R-data.pdf", "R-intro.pdf", "debian-faq.pdf")
GOAL_CER = 0.03
GOAL_CELLS = 0.90
KINDS = ("three columns", "callout box", "drawn out of order")
LABEL = re.compile(r"Station (\d) paragraph (\d)")
FILLER = ["the wind came from the west", "the sensors logged it every ten minutes", "rain fell after dark",
          "the battery held for the whole week", "a technician replaced the mast", "readings were sent at noon"]
WORDS = ["dpkg", "apt", "aptitude", "stable", "testing", "unstable", "main", "contrib", "amd64", "arm64",
         "mirror", "security", "Release", "Packages", "sources.list"]


def table_accuracy(count: int) -> dict:
    """Cell accuracy of silver.tables on `count` generated ruled tables."""
    rng = random.Random(0)
    right = total = found = 0
    for n in range(count):
        columns, body = rng.randint(2, 5), rng.randint(2, 7)
        header = [f"{rng.choice(WORDS).capitalize()} {i}" for i in range(columns)]
        rows = [header] + [[rng.choice([rng.choice(WORDS), f"{rng.randint(0, 999)}.{rng.randint(0, 99)}",
                                        f"{rng.randint(1, 99)} MB"]) for _ in range(columns)] for _ in range(body)]
        caption = f"Table {n + 1}: generated table {n + 1}" if n % 2 == 0 else ""
        document = parse_pdf(ruled_table_pdf(rows, caption), f"table{n}.pdf", tables=True)
        tables = [p.text for s in document.sections for p in s.paragraphs if is_table(p.text)]
        total += sum(len(row) for row in rows)
        if len(tables) != 1:
            continue
        found += 1
        lines = [line for line in tables[0].split("\n") if line.startswith("|") and not line.startswith("|---")]
        read = [[" ".join(c.split()) for c in line.strip("|").split(" | ")] for line in lines]
        right += sum(1 for want, got in zip(rows, read) for a, b in zip(want, got) if a == b.strip())
    return {"tables": count, "found": found, "cells": total, "cell_accuracy": right / total,
            "goal_cell_accuracy": GOAL_CELLS, "goal_met": right / total >= GOAL_CELLS,
            "baseline_without_tables": 0.0}


# Paragraph openings (headings included) in reading order, written by hand from the rendered pages.
GUIDE_ORDER = {
    ("mnras_guide.pdf", 2): [
        "PREPARING AND SUBMITTING", "We recommend that you start", "If a paper is accepted",
        "Papers must be submitted electronically", "CLASS OPTIONS", "There are several options which",
        "The available options are", "Some of these options are deprecated", "TITLE PAGE", "If you are using",
        "5.1 Title", "There are two forms of the title", "The full title can be multiple", "See appendix B",
        "5.2 Authors and institutions", "Like the title, there are two", "If the author list is more",
        "For example, if I were", "Affiliations should be in the format", "Email addresses can be inserted",
        "5.3 Abstract and keywords", "The abstract is entered in", "Note that there is a word limit",
        "Immediately following the abstract", "There is a list of permitted"],
    ("apsguide4-2.pdf", 2): [
        "Paper size", "Manuscripts should be submitted to APS", "MARKING UP FRONT MATTER",
        "Perhaps the most important macros", "The title of the manuscript should",
        "Authors, affiliations, and collaborations", "makes it straightforward to input author",
        "macro to explicitly indicate", "macro may be used to specify an", "macro may be used to specify a URL",
        "alternate affiliation or temporary", "macro may be used only if", "for each affiliation",
        "Superscripts linking authors", "A collaboration may be specified", "The abstract must be specified",
        "REFERENCES AND FOOTNOTES", "Authors are strongly encouraged", "The following apply whether",
        "Authors should use the"],
    ("ltubguid.pdf", 2): [
        "commands (but", "Authors may note that the style", "For references to numbered sections",
        "Reference can also be made", "and the command", "6.1 Abstracts", "class provides two environments",
        "Please write an abstract", "6.2 Appendices", "A paper may have appendices", "Which will produce",
        "articles may have a small extension", "which will produce", "In both cases, the subsections",
        "Titles, addresses and so on", "The title and author(s) of a paper", "command is used once for each",
        "For example, the present paper", "Lines in the title information", "If the paper is the result"],
}


def normalised(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def openings_in_order(text: str, openings: list[str]) -> tuple[int, list[str]]:
    """How many openings have, as the opening found before them in `text`, their predecessor by
    hand; and the openings not found."""
    text = normalised(text)
    found = {o: text.find(normalised(o)) for o in openings}
    seen = sorted((at, o) for o, at in found.items() if at >= 0)
    before = dict(zip([o for _, o in seen], [None] + [o for _, o in seen[:-1]]))
    right = dict(zip(openings, [None] + openings[:-1]))
    return sum(1 for o in openings if o in before and before[o] == right[o]), [o for o in openings if found[o] < 0]


def guide_order() -> dict:
    """Share of hand-ordered paragraph openings in order on pages of the two-column guides, read by
    the heuristic reader and by the layout model's regions (forced)."""
    counts = {"heuristic": 0, "layout": 0}
    pages = []
    for (name, number), openings in GUIDE_ORDER.items():
        content = (CORPUS / "two-column" / name).read_bytes()
        page = open_pdf(content).pages[number - 1]
        lines = group_lines(page_runs(page), number)
        with pdfium.PdfDocument(content) as document:
            regions = page_regions(document[number - 1])
        row = {"file": name, "page": number, "openings": len(openings)}
        for reader, flows in (("heuristic", reading_order(lines, float(page.mediabox.width))),
                              ("layout", flows_by_regions(lines, regions))):
            text = "\n".join(p.text for flow in flows for p in paragraphs_of_flow(flow))
            right, missing = openings_in_order(text, openings)
            counts[reader] += right
            row[reader] = right / len(openings)
            row[f"{reader}_not_found"] = missing
        pages.append(row)
    total = sum(len(o) for o in GUIDE_ORDER.values())
    return {"openings": total, "in_order_heuristic": counts["heuristic"] / total,
            "in_order_layout_forced": counts["layout"] / total, "per_page": pages}


def in_order_share(document, blocks: list[list[tuple[str, str]]]) -> float:
    """Share of the labelled paragraphs whose predecessor in the output is their predecessor on
    the page, where the page's paragraphs are `blocks` (a callout and the body beside it) that
    may be read in either order: the better order counts."""
    seen = LABEL.findall("\n".join(p.text for s in document.sections for p in s.paragraphs))
    before = dict(zip(seen, [None] + seen[:-1]))
    best = 0.0
    for order in itertools.permutations(blocks):
        truth = [label for block in order for label in block]
        right = dict(zip(truth, [None] + truth[:-1]))
        best = max(best, sum(1 for label in truth if label in before and before[label] == right[label]) / len(truth))
    return best


def intact_share(document, paragraphs: list[str]) -> float:
    """Share of the page's paragraphs whose words come out together, in one stretch of the text:
    lines of a box read into the text beside it break both."""
    text = " ".join(" ".join(p.text.split()) for s in document.sections for p in s.paragraphs)
    return sum(1 for paragraph in paragraphs if " ".join(paragraph.split()) in text) / len(paragraphs)


def _paragraphs(rng: random.Random, station: int, count: int) -> list[str]:
    return [f"Station {station} paragraph {p}: " + ", ".join(rng.sample(FILLER, rng.randint(2, 5))) + "."
            for p in range(1, count + 1)]


def uncertain_page(kind: str, rng: random.Random) -> tuple[bytes, list[list[tuple[str, str]]], list[str]]:
    """A generated page of `kind`, its labelled paragraphs in blocks (see in_order_share) and
    their texts."""
    if kind == "three columns":
        columns = [_paragraphs(rng, c, rng.randint(1, 3)) for c in range(1, 4)]
        return three_column_pdf(columns), [[(str(c), str(p)) for c, paragraphs in enumerate(columns, start=1)
                                             for p in range(1, len(paragraphs) + 1)]], sum(columns, [])
    if kind == "callout box":
        body, callout = _paragraphs(rng, 1, rng.randint(2, 4)), _paragraphs(rng, 9, rng.randint(1, 2))
        return callout_pdf(body, callout), [[("1", str(p)) for p in range(1, len(body) + 1)],
                                            [("9", str(p)) for p in range(1, len(callout) + 1)]], body + callout
    body = _paragraphs(rng, 1, rng.randint(3, 6))
    order = list(range(len(body)))
    while order == sorted(order):
        rng.shuffle(order)
    return shuffled_pdf(body, order), [[("1", str(p)) for p in range(1, len(body) + 1)]], body


def layout_order(count: int) -> dict:
    """Share of paragraphs in order on `count` generated pages of each kind the heuristic reader
    is unsure of, silver.layout on and off."""
    rng = random.Random(0)
    result = {}
    for kind in KINDS:
        shares: dict[bool, list[float]] = {False: [], True: []}
        intact: dict[bool, list[float]] = {False: [], True: []}
        seconds = {False: 0.0, True: 0.0}
        layout_pages = 0
        for n in range(count):
            pdf, blocks, texts = uncertain_page(kind, rng)
            for layout in (False, True):
                started = time.perf_counter()
                document = parse_pdf(pdf, f"page{n}.pdf", layout=layout)
                seconds[layout] += time.perf_counter() - started
                shares[layout].append(in_order_share(document, blocks))
                intact[layout].append(intact_share(document, texts))
                layout_pages += len(document.layout_pages or [])
        result[kind] = {"pages": count, "layout_model_pages": layout_pages,
                        "in_order_heuristic": statistics.fmean(shares[False]),
                        "in_order_layout": statistics.fmean(shares[True]),
                        "intact_heuristic": statistics.fmean(intact[False]),
                        "intact_layout": statistics.fmean(intact[True]),
                        "seconds_per_page_heuristic": seconds[False] / count,
                        "seconds_per_page_layout": seconds[True] / count}
    result["note"] = "generated pages; the first layout page includes loading the model"
    return result


def corpus_triggers() -> dict:
    """The corpus's pages that reach the layout model in silver, with the trigger's reason."""
    found = {}
    for path in sorted(CORPUS.rglob("*.pdf")):
        content = path.read_bytes()
        try:
            reader = open_pdf(content)
        except ParseFailure:
            continue  # the password-protected edge case
        layout = PageLayout(content, ())
        extract_paragraphs(reader, [], layout=layout)
        found.update({f"{path.name} p{number}": why for number, why in layout.reasons.items()})
    return found


def layer_text(reader, number: int) -> str:
    """A page's text layer as the parser reads it, whitespace-normalised."""
    return " ".join(line.text for line in group_lines(page_runs(reader.pages[number - 1]), number))


def scan(content: bytes, numbers: list[int], dpi: int) -> bytes:
    """An image-only PDF of the given pages (1-based) rendered at `dpi`."""
    source = pdfium.PdfDocument(content)
    images = [source[n - 1].render(scale=dpi / 72, grayscale=True).to_pil() for n in numbers]
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=dpi, save_all=True, append_images=images[1:])
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=10, help="pages per manual")
    parser.add_argument("--scan-dpi", type=int, default=300, help="resolution of the simulated scan")
    parser.add_argument("--tables", type=int, default=20, help="generated ruled tables for cell accuracy")
    parser.add_argument("--layout-pages", type=int, default=30, help="generated pages of each uncertain kind "
                        "(three columns, a callout box beside text, drawn out of order) for reading order")
    parser.add_argument("--ocr-dpi", type=int, default=0, help="OCR resolution (0: silver.ocr_dpi); results "
                        "of another value go to extraction-ocr<dpi>.json")
    args = parser.parse_args()
    silver = Settings().silver
    options = OcrOptions(args.ocr_dpi or silver.ocr_dpi, silver.ocr_languages, silver.ocr_page_seconds)
    rows, seconds, pages = [], 0.0, 0
    for name in MANUALS:
        content = (CORPUS / "manuals" / name).read_bytes()
        reader = open_pdf(content)
        texts = {n: layer_text(reader, n) for n in range(1, len(reader.pages) + 1)}
        candidates = [n for n, text in texts.items() if len(text) >= 500]
        step = len(candidates) / args.pages
        chosen = [candidates[int(i * step)] for i in range(args.pages)]
        scanned = scan(content, chosen, args.scan_dpi)
        try:
            parse_pdf(scanned, name)
            baseline = "read text (unexpected)"
        except ParseFailure as failure:
            baseline = failure.reason
        # The OCR step of the parse (render + Tesseract -> lines), on every page, before the
        # parser's furniture removal (the text layer compared with still has its running headers).
        ocr = PageOcr(scanned, (), options)
        lines: list[list] = [[] for _ in chosen]
        started = time.perf_counter()
        ocr.fill(lines)
        took = time.perf_counter() - started
        seconds, pages = seconds + took, pages + len(chosen)
        for number, page_lines in zip(chosen, lines):
            truth, read = texts[number], " ".join(line.text for line in page_lines)
            rows.append({"file": name, "page": number, "chars": len(truth),
                         "cer": Levenshtein.distance(read, truth) / len(truth),
                         "word_error_order_free": Levenshtein.distance(sorted(read.split()), sorted(truth.split()))
                         / len(truth.split())})
            print(f"{name} p{number}: {len(truth)} chars, CER {rows[-1]['cer']:.4f}, "
                  f"order-free word error {rows[-1]['word_error_order_free']:.4f}", flush=True)
        print(f"{name}: {len(chosen)} scanned pages; without OCR: {baseline}; OCR read {len(ocr.pages)} "
              f"in {took:.1f} s, failed on {len(ocr.failed)}", flush=True)
    cers = [r["cer"] for r in rows]
    total_cer = sum(r["cer"] * r["chars"] for r in rows) / sum(r["chars"] for r in rows)
    result = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "scan_dpi": args.scan_dpi, "ocr_dpi": options.dpi, "pages": pages,
        "baseline_without_ocr": "no_text: nothing read",
        "cer_overall": total_cer, "cer_median": statistics.median(cers), "cer_max": max(cers),
        "word_error_order_free_mean": statistics.fmean(r["word_error_order_free"] for r in rows),
        "pages_per_second": pages / seconds, "seconds_per_page": seconds / pages,
        "goal_cer": GOAL_CER, "goal_met": total_cer <= GOAL_CER, "per_page": rows,
    }
    print(f"\nOCR on {pages} scanned manual pages ({args.scan_dpi} dpi scan, OCR at {options.dpi} dpi):")
    print(f"  CER overall {total_cer:.4f} (median {result['cer_median']:.4f}, worst {result['cer_max']:.4f}); "
          f"goal <= {GOAL_CER}: {'met' if result['goal_met'] else 'NOT met'}")
    print(f"  order-free word error rate {result['word_error_order_free_mean']:.4f}")
    print(f"  {result['pages_per_second']:.2f} pages/s ({result['seconds_per_page']:.2f} s a page, one process)")
    print("  baseline: the parser without OCR reads nothing from these PDFs (no_text)")
    result["tables"] = table_accuracy(args.tables)
    tables = result["tables"]
    print(f"\nTables (silver.tables on) on {tables['tables']} generated ruled tables: {tables['found']} found, "
          f"cell accuracy {tables['cell_accuracy']:.3f} of {tables['cells']} cells; goal >= {GOAL_CELLS}: "
          f"{'met' if tables['goal_met'] else 'NOT met'}; baseline (tables off): 0 cells as cells")
    result["reading_order"] = order = layout_order(args.layout_pages)
    print(f"\nReading order on generated pages the heuristic reader is unsure of, {args.layout_pages} of each "
          "kind: paragraphs in order with silver.layout against the heuristic reader (the baseline)")
    for kind in KINDS:
        row = order[kind]
        print(f"  {kind}: in order {row['in_order_layout']:.3f}, intact {row['intact_layout']:.3f} with the layout "
              f"model ({row['layout_model_pages']} pages through it, {row['seconds_per_page_layout']:.2f} s a page); "
              f"heuristic {row['in_order_heuristic']:.3f}, intact {row['intact_heuristic']:.3f} "
              f"({row['seconds_per_page_heuristic']:.3f} s a page)")
    result["corpus_triggers"] = triggers = corpus_triggers()
    print(f"Corpus pages that reach the layout model: {len(triggers)}")
    for page, why in triggers.items():
        print(f"  {page}: {why}")
    result["guide_order"] = guides = guide_order()
    print(f"Reading order on {len(guides['per_page'])} two-column guide pages ({guides['openings']} paragraph "
          f"openings ordered by hand): {guides['in_order_heuristic']:.3f} in order for the heuristic reader "
          f"(what silver uses there), {guides['in_order_layout_forced']:.3f} for the layout model's regions (forced)")
    for row in guides["per_page"]:
        print(f"  {row['file']} p{row['page']}: heuristic {row['heuristic']:.3f}, layout {row['layout']:.3f}; "
              f"not found: {row['heuristic_not_found'] or '-'} / {row['layout_not_found'] or '-'}")
    write_result("extraction" if options.dpi == silver.ocr_dpi else f"extraction-ocr{options.dpi}", result)


if __name__ == "__main__":
    main()
