"""Tables as Markdown: the form the parser stores a table in (one paragraph, one `table` chunk)
and the chain recognises to put it into the prompt whole. Shared by both sides, so it needs
nothing but the standard library."""
from __future__ import annotations

import re

TABLE_LINE = re.compile(r"^\|.*\|$")


def cell_text(cell: str | None) -> str:
    """One Markdown cell: the cell's lines joined, pipes escaped."""
    return " ".join((cell or "").split()).replace("|", "\\|")


def markdown(rows: list[list[str]], caption: str = "") -> str:
    """Rows (the first is the header) as a Markdown table, the caption on the line above."""
    width = max(len(row) for row in rows)
    cells = [[cell_text(c) for c in row] + [""] * (width - len(row)) for row in rows]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "---|" * width)
    return "\n".join(([caption] if caption else []) + lines)


def is_table(text: str) -> bool:
    """True if a paragraph is a Markdown table (an optional caption line, then | rows |)."""
    lines = text.split("\n")
    rows = lines[1:] if lines and not TABLE_LINE.match(lines[0]) else lines
    return len(rows) >= 3 and all(TABLE_LINE.match(line) for line in rows)
