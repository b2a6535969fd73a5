"""Verified citations: every sentence of an answer is matched to the source sentence that
supports it (document, page, quoted span) or marked unsupported. Deterministic: embedding
cosine (the index's own embedding model) and content-word overlap, thresholds in conf.

A `[n]` the model wrote is kept only when source n supports its sentence; a supported sentence
without one gets the number of its best supporting source. Sentences with fewer than
`citations.min_claim_words` content words ("Yes.", a heading) and questions (a model that echoes
the question it was asked, or a heading) are not claims and get no verdict.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lakerag.retrieval.index_files import bm25_tokens
from lakerag.settings import CitationSettings

Embed = Callable[[list[str]], np.ndarray]  # texts -> unit vectors, one row each
MARKER = re.compile(r"\s*\[(\d+(?:\s*,\s*\d+)*)\]")
FENCE = re.compile(r"```.*?(?:```|$)", re.DOTALL)
# A sentence ends at . ! ? (followed by space or the end), or at a line break; a fenced code block
# is one unit. "e.g." and "i.e." and version numbers ("11.1") do not end a sentence.
SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)[.!?](?=\s|$)|\n")


@dataclass(frozen=True)
class SourceSentence:
    """One sentence of a prompt source, with where it came from."""

    source: int  # the source's number in the prompt
    text: str
    page: int


@dataclass
class SentenceVerdict:
    """What the check found for one answer sentence."""

    text: str  # the sentence as the model wrote it, without [n] markers
    start: int  # character span in the model's answer
    end: int
    claim: bool  # enough content words to be checked
    supported: bool = False
    source: int = 0  # best supporting source (0: none)
    page: int = 0
    quote: str = ""  # the supporting source sentence
    similarity: float = 0.0
    overlap: float = 0.0
    written: list[int] = field(default_factory=list)  # the numbers the model wrote on it
    sources: list[int] = field(default_factory=list)  # every source that supports it

    def record(self) -> dict:
        """Plain fields for the answer's output."""
        return {"text": self.text, "claim": self.claim, "supported": self.supported, "source": self.source,
                "page": self.page, "quote": self.quote, "similarity": round(self.similarity, 3),
                "overlap": round(self.overlap, 3), "written": self.written, "sources": self.sources}


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text` (a fenced code block is one span)."""
    spans: list[tuple[int, int]] = []

    def prose(start: int, end: int) -> None:
        position = start
        for match in SENTENCE_END.finditer(text, start, end):
            if text[position: match.end()].strip():
                spans.append((position, match.end()))
            position = match.end()
        if text[position:end].strip():
            spans.append((position, end))

    position = 0
    for fence in FENCE.finditer(text):
        prose(position, fence.start())
        spans.append((fence.start(), fence.end()))
        position = fence.end()
    prose(position, len(text))
    # trim the spaces around each span, so markers are appended right after the sentence
    trimmed = []
    for start, end in spans:
        piece = text[start:end]
        start += len(piece) - len(piece.lstrip())
        end -= len(piece) - len(piece.rstrip())
        trimmed.append((start, end))
    return trimmed


def written_numbers(sentence: str, sources: int) -> list[int]:
    """Source numbers written as [n] (also [1, 2]) in a sentence, in order, no repeats."""
    found: list[int] = []
    for group in MARKER.findall(sentence):
        for number in (int(n) for n in group.split(",")):
            if 1 <= number <= sources and number not in found:
                found.append(number)
    return found


def source_sentences(number: int, paragraphs: list[tuple[str, int]]) -> list[SourceSentence]:
    """The sentences of one source's (paragraph, page) pieces."""
    out = []
    for paragraph, page in paragraphs:
        for start, end in split_sentences(paragraph):
            text = " ".join(paragraph[start:end].split())
            if text:
                out.append(SourceSentence(number, text, page))
    return out


def _words(text: str) -> set[str]:
    return set(bm25_tokens([text])[0])


def verify(answer: str, sources: list[SourceSentence], embed: Embed, settings: CitationSettings,
           source_count: int) -> list[SentenceVerdict]:
    """A verdict for each sentence of `answer` against the source sentences."""
    verdicts, claim_words = [], []
    for start, end in split_sentences(answer):
        raw = answer[start:end]
        text = " ".join(MARKER.sub("", raw).split())
        words = _words(text)
        claim = len(words) >= settings.min_claim_words and not text.endswith("?")
        verdicts.append(SentenceVerdict(text, start, end, claim=claim, written=written_numbers(raw, source_count)))
        if claim:
            claim_words.append(words)
    claims = [v for v in verdicts if v.claim]
    if not claims or not sources:
        return verdicts
    answer_vectors = embed([v.text for v in claims])
    source_vectors = embed([s.text for s in sources])
    similarity = answer_vectors @ source_vectors.T
    source_words = [_words(s.text) for s in sources]
    for row, (verdict, words) in enumerate(zip(claims, claim_words)):
        best: dict[int, tuple[float, SourceSentence, float, float]] = {}  # per supporting source
        closest = 0.0
        for column, sentence in enumerate(sources):
            # overlap counts the neighbouring sentences of the same source too: an answer
            # sentence often joins two sentences of its source
            window = set(source_words[column])
            for neighbour in (column - 1, column + 1):
                if 0 <= neighbour < len(sources) and sources[neighbour].source == sentence.source:
                    window |= source_words[neighbour]
            overlap = len(words & window) / len(words)
            cosine = float(similarity[row, column])
            if cosine >= settings.min_similarity and overlap >= settings.min_overlap:
                if cosine + overlap > best.get(sentence.source, (-1.0,))[0]:
                    best[sentence.source] = (cosine + overlap, sentence, cosine, overlap)
            elif cosine + overlap > closest:
                # the closest sentence, reported for an unsupported claim
                closest, verdict.similarity, verdict.overlap = cosine + overlap, cosine, overlap
        if best:
            verdict.sources = sorted(best)
            # the number the model wrote wins when its source supports the sentence
            chosen = next((n for n in verdict.written if n in best), max(best, key=lambda n: best[n][0]))
            _, sentence, verdict.similarity, verdict.overlap = best[chosen]
            verdict.supported, verdict.source, verdict.page, verdict.quote = True, chosen, sentence.page, sentence.text
    return verdicts


def cited_answer(answer: str, verdicts: list[SentenceVerdict]) -> str:
    """The answer with each sentence's markers checked: a [n] the model wrote stays where it is
    when source n supports the sentence and goes otherwise; a supported sentence left without
    one gets its best supporting source's number at its end."""
    out, position = [], 0
    for verdict in verdicts:
        out.append(answer[position: verdict.start])
        sentence = answer[verdict.start: verdict.end]

        def keep_supported(match: re.Match) -> str:
            kept = [n for n in (int(x) for x in match.group(1).split(",")) if n in verdict.sources]
            return (match.group(0)[: len(match.group(0)) - len(match.group(0).lstrip())] + "[" +
                    ", ".join(map(str, kept)) + "]") if kept else ""

        checked = MARKER.sub(keep_supported, sentence)
        if verdict.supported and not MARKER.search(checked):
            if checked.startswith("```"):
                checked += f"\n[{verdict.source}]"
            else:
                # before the closing punctuation, where the model would write it
                bare = checked.rstrip(".!?:;")
                checked = f"{bare} [{verdict.source}]{checked[len(bare):]}"
        out.append(checked)
        position = verdict.end
    out.append(answer[position:])
    return "".join(out).strip()
