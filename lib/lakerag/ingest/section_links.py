"""Edges between the sections of one parsed document: its link annotations and its text
references ("see Section 3.1 [What is S?], page 12", "Chapter 7"). Pure Python, no Spark.

A link annotation is placed in the section of the paragraph under it and points to the section
at its destination (page and height). A text reference names a section by number (taken from
the heading, "3.1 What is S?", or counted from the outline where headings carry none, as in the
Debian FAQ) or by the bracketed title texinfo adds. A reference that names no section of the
document (another manual, a number we cannot place) is kept with no target: counted, not guessed.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lakerag.ingest.pdf_parse import PageLink, Paragraph, Section

# The edge kinds (settings.GRAPH_EDGES lists them for the query side, which does not import this).
LINK, REFERENCE, PARENT, NEXT = "link", "reference", "parent", "next"

# "Section 7.5 [Binary connections], page 29", "Chapter 9", "Appendix A", "Section A.2".
REFERENCE_TEXT = re.compile(
    r"\b(?P<word>Section|Chapter|Appendix)\s+(?P<number>(?:[A-Z]|\d+)(?:\.\d+)*)\b"
    r"(?:\s*\[(?P<title>[^\]]{1,160})\])?(?:,?\s*page\s+\d+)?")
# The number a heading carries: "3.1 What is S?", "Chapter 4 Factors", "Appendix B Invoking R".
# texinfo's outline writes an appendix as "A A sample session": a capital, then a capitalised title.
HEADING_NUMBER = re.compile(r"^\s*(?i:chapter\s+)?(\d+(?:\.\d+)*)\.?\s+\S|^\s*(?i:appendix\s+)?([A-Z](?:\.\d+)*)\.?\s+[A-Z]")
NUMBER_PREFIX = re.compile(r"^\s*(?:chapter\s+|appendix\s+)?[\dA-Z]+(?:\.\d+)*\.?\s+", re.IGNORECASE)
WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class SectionLink:
    """An edge from one section to another (positions in the document's section list); a
    reference that names no section has target None."""

    source: int
    target: int | None
    kind: str  # link | reference (parent and next come from the section tree, in parse_pool)
    text: str  # the words of the link or reference
    page: int  # where it is


def _norm(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


def heading_number(title: str) -> str | None:
    """The section number a heading spells out, if any."""
    match = HEADING_NUMBER.match(title)
    return (match.group(1) or match.group(2)) if match else None


def section_numbers(sections: list[Section]) -> list[str | None]:
    """Each section's number: the one its heading carries, else its place among its siblings
    (1, 1.2, ...) when none of them carries one; unnumbered where siblings are numbered and it
    is not (a preface among chapters), and below an unnumbered parent."""
    numbers: list[str | None] = [None] * len(sections)
    explicit = [heading_number(s.title) if s.level > 0 else None for s in sections]
    children: dict[int | None, list[int]] = {}
    stack: list[int] = []  # open sections, outermost first
    for index, section in enumerate(sections):
        if section.level <= 0:
            continue
        while stack and sections[stack[-1]].level >= section.level:
            stack.pop()
        children.setdefault(stack[-1] if stack else None, []).append(index)
        stack.append(index)

    def number(parent: int | None, prefix: str | None) -> None:
        group = children.get(parent, [])
        for index in group:
            # "A Brief History" among unnumbered siblings is an article, not appendix A: a bare
            # letter is a number only beside siblings that carry numbers ("1 ...", "B ...").
            if _bare_letter(sections[index].title, explicit[index]) and not any(
                    explicit[i] for i in group if i != index):
                explicit[index] = None
        counted = not any(explicit[i] for i in group)
        for position, index in enumerate(group, start=1):
            if explicit[index]:
                numbers[index] = explicit[index]
            elif counted and (parent is None or prefix):
                numbers[index] = f"{prefix}.{position}" if prefix else str(position)
            number(index, numbers[index])

    number(None, None)
    return numbers


def _bare_letter(title: str, number: str | None) -> bool:
    """Whether a heading's number is a letter alone, with no "Appendix" before it ("A Foo")."""
    return number is not None and number.isalpha() and not title.lstrip().lower().startswith("appendix")


def _section_at(starts: list[int], paragraph: int) -> int:
    """Position of the section holding paragraph index `paragraph` (the last one starting at or before it)."""
    return max(bisect.bisect_right(starts, paragraph) - 1, 0)


def link_targets(links: list[PageLink], sections: list[Section], paragraphs: list[Paragraph]) -> list[SectionLink]:
    """Link annotations as edges: from the section under the link to the section at its
    destination. Links on no paragraph (contents pages, dropped headers) are skipped."""
    if not sections or not paragraphs:
        return []
    starts = [s.first_paragraph for s in sections]
    on_page: dict[int, list[int]] = {}
    for index, paragraph in enumerate(paragraphs):
        on_page.setdefault(paragraph.page, []).append(index)
    edges: list[SectionLink] = []
    for link in links:
        under = next((i for i in on_page.get(link.page, []) if paragraphs[i].contains(link.x, link.y)), None)
        if under is None:
            continue
        source = _section_at(starts, under)
        target = _destination_section(link, starts, paragraphs, on_page)
        if target != source:
            edges.append(SectionLink(source, target, LINK, link.text, link.page))
    return edges


def _destination_section(link: PageLink, starts: list[int], paragraphs: list[Paragraph],
                         on_page: dict[int, list[int]]) -> int | None:
    """The section at a link's destination: that of the first paragraph at or below the target
    point (in its column), or of a section starting within the next two paragraphs (a heading's
    "Chapter 7" label stands before the title where the section starts)."""
    landing = next((i for i in on_page.get(link.target_page, [])
                    if (link.target_top is None or paragraphs[i].y <= link.target_top + 2)
                    and (link.target_left is None or paragraphs[i].x0 >= link.target_left - 5)), None)
    if landing is None:
        later = [page for page in on_page if page > link.target_page]
        if not later:
            return None
        landing = on_page[min(later)][0]
    section = _section_at(starts, landing)
    if starts[section] == landing:
        return section
    for following in (section + 1, section + 2):
        if following < len(starts) and landing < starts[following] <= landing + 2 \
                and paragraphs[min(starts[following], len(paragraphs) - 1)].page == paragraphs[landing].page:
            return following
    return section


def text_references(sections: list[Section]) -> list[SectionLink]:
    """'Section N' / 'Chapter N' / 'Appendix X' references in the sections' text, resolved by the
    bracketed title where it names a section, else by number; unresolved ones have target None."""
    numbers = section_numbers(sections)
    by_number: dict[str, int] = {}
    for index, number in enumerate(numbers):
        if number is not None:
            by_number.setdefault(number, index)
    by_title: dict[str, int] = {}
    for index, section in enumerate(sections):
        if section.level > 0:
            # both the title and the title less its number: "A Brief History" may be either
            numbered = heading_number(section.title)
            for title in (NUMBER_PREFIX.sub("", section.title) if numbered else section.title, section.title):
                by_title.setdefault(_norm(title), index)
    edges: list[SectionLink] = []
    for source, section in enumerate(sections):
        for paragraph in section.paragraphs:
            for match in REFERENCE_TEXT.finditer(paragraph.text):
                title = match.group("title")
                target = by_title.get(_norm(title)) if title else None
                if target is None:
                    target = by_number.get(match.group("number"))
                if target != source:
                    edges.append(SectionLink(source, target, REFERENCE, " ".join(match.group(0).split()),
                                             paragraph.page))
    return edges


def section_links(sections: list[Section], paragraphs: list[Paragraph], links: list[PageLink]) -> list[SectionLink]:
    """Every link and text reference of a document, once each (same source, target, kind, text)."""
    seen: set[SectionLink] = set()
    edges: list[SectionLink] = []
    for edge in link_targets(links, sections, paragraphs) + text_references(sections):
        key = SectionLink(edge.source, edge.target, edge.kind, edge.text, 0)
        if key not in seen:
            seen.add(key)
            edges.append(edge)
    return edges
