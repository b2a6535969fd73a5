"""Benchmark: page furniture and compatibility characters left in the parsed text of the corpus.

For each PDF of data/corpus: "leaked before" counts the lines at a page's top or bottom that the
running-band rule removes and the older rules (text repeated on half the pages, bare page
numbers) kept, i.e. the running headers and footers whose text varies per page that reached
the section text before; "left after" counts how many of those lines' texts still occur in the
sections `parse_pdf` returns now. "compat chars" counts characters that NFKC changes
(ligatures such as U+FB01) in the raw lines and in the parsed sections. Writes
bench/results/furniture.json.

    .venv/bin/python bench/furniture.py
"""
from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import CORPUS, write_result  # noqa: E402

from lakerag.ingest.pdf_parse import (  # noqa: E402
    ParseFailure,
    group_lines,
    open_pdf,
    page_runs,
    parse_pdf,
    repeating_lines,
    running_band_lines,
)


def compat_chars(text: str) -> int:
    """Characters that NFKC would change."""
    return sum(1 for ch in text if unicodedata.normalize("NFKC", ch) != ch)


def raw_text(runs) -> str:
    return "".join(run.text for run in runs)


def main() -> None:
    results: dict[str, dict] = {}
    for path in sorted(CORPUS.rglob("*.pdf")):
        content = path.read_bytes()
        try:
            reader = open_pdf(content)
            parsed = parse_pdf(content, path.name)
        except ParseFailure as err:
            print(f"{path.name:<36} skipped ({err.reason})")
            continue
        runs = [page_runs(page) for page in reader.pages]
        pages = [group_lines(page, number) for number, page in enumerate(runs, start=1)]
        newly = running_band_lines(pages) - repeating_lines(pages)
        leaked = [line for page in pages for line in page if id(line) in newly]
        text = "\n".join(section.text for section in parsed.sections)
        flat = " ".join(text.split())
        left = [line for line in leaked if len(line.text) >= 12 and line.text in flat]
        row = {"pages": len(pages), "leaked_before": len(leaked), "left_after": len(left),
               "compat_chars_raw": sum(compat_chars(raw_text(page)) for page in runs),
               "compat_chars_after": compat_chars(text),
               "examples": [f"p. {line.page}: {line.text[:70]}" for line in leaked[:: max(1, len(leaked) // 3)][:3]]}
        results[path.name] = row
        print(f"{path.name:<36} pages {row['pages']:>4}  leaked before {row['leaked_before']:>4}  left after "
              f"{row['left_after']:>3}  compat chars raw {row['compat_chars_raw']:>4} -> {row['compat_chars_after']}")
    totals = {key: sum(row[key] for row in results.values())
              for key in ("leaked_before", "left_after", "compat_chars_raw", "compat_chars_after")}
    print("total", "  ".join(f"{key} {value}" for key, value in totals.items()))
    write_result("furniture", {"documents": results, "total": totals})


if __name__ == "__main__":
    main()
