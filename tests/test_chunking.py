"""Chunking strategies on plain strings with the packaged model's tokenizer: no Spark."""
from __future__ import annotations

import pytest

from lakerag.ingest.chunking import Chunker, ChunkSpec, paragraph_spans
from lakerag.weights import load_tokenizer, max_sequence_tokens

MODEL = "all-MiniLM-L6-v2"
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    return Chunker(load_tokenizer(MODEL))


def test_packaged_model_window():
    assert max_sequence_tokens(MODEL) == 256


def test_paragraph_spans():
    assert paragraph_spans("a\n\nbb\n\nc") == [(0, 1), (3, 5), (7, 8)]


def test_short_section_is_one_chunk_with_its_token_count(chunker):
    text = f"{SENTENCE}\n\n{SENTENCE}"
    [chunk] = chunker.chunk(text, [3, 4], ChunkSpec("section", 254))
    assert chunk.text == text and (chunk.page_start, chunk.page_end) == (3, 4)
    assert chunk.token_count == chunker.count(text) == 2 * chunker.count(SENTENCE)


def test_long_section_splits_at_paragraphs_within_the_window(chunker):
    paragraphs = [" ".join([SENTENCE] * 6) for _ in range(4)]  # ~90 tokens each
    text = "\n\n".join(paragraphs)
    chunks = chunker.chunk(text, [1, 1, 2, 2], ChunkSpec("section", 200))
    assert [c.text for c in chunks] == ["\n\n".join(paragraphs[:2]), "\n\n".join(paragraphs[2:])]
    assert all(c.token_count <= 200 for c in chunks)
    assert [(c.page_start, c.page_end) for c in chunks] == [(1, 1), (2, 2)]


def test_paragraph_strategy_merges_short_paragraphs_forward(chunker):
    text = f"Figure 3\n\n{SENTENCE} {SENTENCE}\n\n{SENTENCE}"
    chunks = chunker.chunk(text, [1, 1, 2], ChunkSpec("paragraph", 254, paragraph_min_tokens=10))
    assert [c.text for c in chunks] == [f"Figure 3\n\n{SENTENCE} {SENTENCE}", SENTENCE]
    assert [c.page_start for c in chunks] == [1, 2]


def test_paragraph_over_the_window_is_split_at_sentences(chunker):
    text = " ".join([SENTENCE] * 30)  # ~420 tokens, one paragraph
    chunks = chunker.chunk(text, [1], ChunkSpec("paragraph", 100))
    assert len(chunks) >= 5
    assert all(c.token_count <= 100 and c.text.endswith(".") for c in chunks)


def test_fixed_windows_overlap(chunker):
    words = [f"word{i}" for i in range(300)]
    text = " ".join(words)
    spec = ChunkSpec("fixed", 254, fixed_tokens=64, fixed_overlap=16)
    spans = chunker.spans(text, spec)
    ids = chunker.tokenizer.encode(text, add_special_tokens=False).ids
    assert len(spans) == -(-(len(ids) - 16) // 48)
    first, second = (text[a:b] for a, b in spans[:2])
    assert chunker.count(first) == 64
    overlap = chunker.tokenizer.encode(first, add_special_tokens=False).ids[-16:]
    assert chunker.tokenizer.encode(second, add_special_tokens=False).ids[:16] == overlap


def test_fingerprint_changes_only_with_the_settings_a_strategy_uses():
    base = {"max_tokens": 254, "model": MODEL}
    assert ChunkSpec("section", fixed_tokens=10, **base).fingerprint == ChunkSpec("section", **base).fingerprint
    assert ChunkSpec("fixed", fixed_tokens=10, **base).fingerprint != ChunkSpec("fixed", **base).fingerprint
    assert ChunkSpec("paragraph", max_tokens=100, model=MODEL).fingerprint != ChunkSpec("paragraph", **base).fingerprint


def test_empty_text_has_no_chunks(chunker):
    assert chunker.chunk("  ", [1], ChunkSpec("section", 254)) == []
