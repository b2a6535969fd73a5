"""Section text -> chunks, by strategy. Pure Python: a tokenizer and semantic-text-splitter.

Token counts come from the embedding model's own tokenizer, so a chunk never exceeds the
model's window. Splitting long text at paragraph, then sentence, then word boundaries is done by
`semantic-text-splitter` (a maintained Rust splitter that measures chunks in tokens).
"""
from __future__ import annotations

import hashlib
import json
from bisect import bisect_left
from dataclasses import dataclass

from semantic_text_splitter import TextSplitter
from tokenizers import Tokenizer

# Bump when chunk boundaries change for the same settings: chunk fingerprints include it.
CHUNKER_VERSION = "chunk-1"
PARAGRAPH_BREAK = "\n\n"


@dataclass(frozen=True)
class ChunkSpec:
    """One strategy's settings; its fingerprint goes into every chunk id it makes."""

    strategy: str
    max_tokens: int
    fixed_tokens: int = 200
    fixed_overlap: int = 40
    paragraph_min_tokens: int = 24
    model: str = ""

    @property
    def fingerprint(self) -> str:
        """Hash of what decides this strategy's chunks (only the settings it uses)."""
        used = {"version": CHUNKER_VERSION, "strategy": self.strategy, "model": self.model,
                "max_tokens": self.max_tokens}
        if self.strategy == "fixed":
            used |= {"tokens": self.fixed_tokens, "overlap": self.fixed_overlap}
        if self.strategy == "paragraph":
            used |= {"min_tokens": self.paragraph_min_tokens}
        return hashlib.sha256(json.dumps(used, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Chunk:
    """A piece of a section's text: [start, end) character offsets and the pages it covers."""

    text: str
    start: int
    end: int
    token_count: int
    page_start: int
    page_end: int


class Tokens:
    """A text's tokenization: each token's [start, end) character offsets."""

    def __init__(self, offsets: list[tuple[int, int]]):
        self.offsets = offsets
        self._starts = [start for start, _ in offsets]

    def count(self, start: int, end: int) -> int:
        """Tokens that start inside [start, end): the count of that piece, since chunk
        boundaries fall between words, where WordPiece/BPE tokens never straddle."""
        return bisect_left(self._starts, end) - bisect_left(self._starts, start)


class Chunker:
    """Cuts section text into chunks with one tokenizer; splitters are cached per capacity."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._splitters: dict[int, TextSplitter] = {}

    def count(self, text: str) -> int:
        """Tokens in `text`, special tokens excluded."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def tokens(self, text: str) -> Tokens:
        """Tokenize `text` once; every strategy's spans and counts are read from it."""
        return Tokens(self.tokenizer.encode(text, add_special_tokens=False).offsets)

    def _split(self, text: str, capacity: int, base: int) -> list[tuple[int, int]]:
        """Spans of `text` (offset by `base`) that fit `capacity` tokens, cut at the largest
        boundaries possible: paragraphs, then sentences, then words."""
        if capacity not in self._splitters:
            self._splitters[capacity] = TextSplitter.from_huggingface_tokenizer(self.tokenizer, capacity)
        return [(base + start, base + start + len(piece))
                for start, piece in self._splitters[capacity].chunk_indices(text)]

    def spans(self, text: str, spec: ChunkSpec, tokens: Tokens | None = None) -> list[tuple[int, int]]:
        """Character spans of `text`'s chunks under `spec`."""
        if not text.strip():
            return []
        tokens = tokens or self.tokens(text)
        if spec.strategy == "section":
            if len(tokens.offsets) <= spec.max_tokens:
                return [(0, len(text))]
            return self._split(text, spec.max_tokens, 0)
        if spec.strategy == "paragraph":
            return self._paragraph_spans(text, spec, tokens)
        if spec.strategy == "fixed":
            return self._window_spans(tokens, spec)
        raise ValueError(f"unknown chunking strategy {spec.strategy!r}")

    def _paragraph_spans(self, text: str, spec: ChunkSpec, tokens: Tokens) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        pending: int | None = None  # start of short paragraphs waiting to be merged forward
        for start, end in paragraph_spans(text):
            if pending is not None:
                start = pending
            count = tokens.count(start, end)
            if count < spec.paragraph_min_tokens and end < len(text):
                pending = start
                continue
            pending = None
            if count <= spec.max_tokens:
                spans.append((start, end))
            else:
                spans.extend(self._split(text[start:end], spec.max_tokens, start))
        return spans

    @staticmethod
    def _window_spans(tokens: Tokens, spec: ChunkSpec) -> list[tuple[int, int]]:
        offsets = tokens.offsets
        size = min(spec.fixed_tokens, spec.max_tokens)
        stride = size - min(spec.fixed_overlap, size - 1)
        spans = []
        for first in range(0, len(offsets), stride):
            window = offsets[first: first + size]
            spans.append((window[0][0], window[-1][1]))
            if first + size >= len(offsets):
                break
        return spans

    def chunk(self, text: str, paragraph_pages: list[int], spec: ChunkSpec, tokens: Tokens | None = None) -> list[Chunk]:
        """Chunks of a section's text with their token counts and page ranges; pass `tokens`
        (from `tokens(text)`) to reuse one tokenization across strategies."""
        tokens = tokens or self.tokens(text)
        paragraphs = paragraph_spans(text)
        chunks = []
        for start, end in self.spans(text, spec, tokens):
            piece = text[start:end].strip()
            if not piece:
                continue
            pages = [page for (p_start, p_end), page in zip(paragraphs, paragraph_pages)
                     if p_start < end and start < p_end] or [paragraph_pages[0]]
            chunks.append(Chunk(piece, start, end, tokens.count(start, end), min(pages), max(pages)))
        return chunks


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of each paragraph of text whose paragraphs are joined by a blank line."""
    spans, start = [], 0
    while True:
        end = text.find(PARAGRAPH_BREAK, start)
        if end < 0:
            spans.append((start, len(text)))
            return spans
        spans.append((start, end))
        start = end + len(PARAGRAPH_BREAK)
