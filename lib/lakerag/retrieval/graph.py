"""Graph-aware retrieval: after the first ranking, the sections that the best hits link to (their
PDF links, "see Section 3.1" references, parent, next section; silver_section_links, stored in
the index as links.parquet) are scored too, and a section pulled in by a link carries the
reference that led to it. Plain Python over a dict of edges: no graph database, no Spark.

Scoring: the ranked sections' scores are scaled to [0, 1] (best = 1); a neighbour reached in h
hops from a seed gets damping**h times the seed's scaled score, or keeps its own if that is
higher. So a section the best hit points to lands just below it, above hits that scored less
than `damping` of the best; a neighbour of a weak seed moves little.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Callable, Iterable

import pandas as pd

@dataclass(frozen=True)
class Via:
    """How a section entered the ranking: from which section, along which edge, with what words."""

    section_id: str
    kind: str
    text: str
    hops: int = 1

    def record(self) -> dict[str, object]:
        """As JSON for traces and answers."""
        return {"from_section_id": self.section_id, "kind": self.kind, "text": self.text, "hops": self.hops}


class SectionGraph:
    """Outgoing edges of each section, by kind."""

    def __init__(self, links: pd.DataFrame):
        self.out: dict[str, list[tuple[str, str, str]]] = {}
        for source, target, kind, text in zip(links["from_section_id"], links["to_section_id"], links["kind"],
                                              links["text"]):
            if target is not None and source != target:
                self.out.setdefault(source, []).append((target, kind, text))

    def __len__(self) -> int:
        return sum(len(edges) for edges in self.out.values())

    def neighbours(self, section_id: str, kinds: Iterable[str], max_degree: int) -> list[tuple[str, str, str]]:
        """(target, kind, text) of the section's edges of `kinds`, once per target (first edge
        wins); none from a hub (an index or contents section) with more than `max_degree` of them."""
        kinds = set(kinds)
        edges = [edge for edge in self.out.get(section_id, []) if edge[1] in kinds]
        cross = [edge for edge in edges if edge[1] in ("link", "reference")]
        if max_degree and len({target for target, _, _ in cross}) > max_degree:
            edges = [edge for edge in edges if edge not in cross]
        seen: set[str] = set()
        return [edge for edge in edges if not (edge[0] in seen or seen.add(edge[0]))]


def expand(ranked: list[tuple[str, float]], graph: SectionGraph, kinds: Iterable[str], seeds: int, damping: float,
           hops: int, max_degree: int, allowed: Callable[[str], bool]) -> list[tuple[str, float, Via | None]]:
    """Sections best first (section_id, score) -> (section_id, graph score, how it came in or
    None), best first: the neighbours of the first `seeds` sections along `kinds`, up to `hops`
    away, scored as the module says; `allowed` says which sections the reader may see."""
    if not ranked:
        return []
    # The order is the ranking's: a reranked head and a first-stage tail carry scores on different
    # scales, so each score is capped by the one above it (a running minimum) before scaling.
    capped = list(accumulate((score for _, score in ranked), min))
    top, bottom = capped[0], capped[-1]
    spread = top - bottom
    scores = {section: (score - bottom) / spread if spread > 0 else 1.0
              for (section, _), score in zip(ranked, capped)}
    seed_scores = dict(scores)  # what a seed passes on: its own, not one an earlier seed raised
    via: dict[str, Via] = {}
    kinds = tuple(kinds)
    for seed, _ in ranked[:seeds]:
        frontier = [seed]
        for hop in range(1, hops + 1):
            reached = []
            for source in frontier:
                for target, kind, text in graph.neighbours(source, kinds, max_degree):
                    pulled = seed_scores[seed] * damping ** hop
                    if pulled > scores.get(target, -1.0) and target != seed and allowed(target):
                        scores[target] = pulled
                        via[target] = Via(source, kind, text, hop)
                        reached.append(target)
            frontier = reached
    order = sorted(scores.items(), key=lambda item: -item[1])
    return [(section, score, via.get(section)) for section, score in order]
