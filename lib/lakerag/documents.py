"""One PDF -> rows for the silver tables, in plain Python; and the process pool that runs it.

This module is what parsing worker processes import, so it stays free of Spark and pandas:
a spawned worker starts in a fraction of a second.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import json
import logging
import multiprocessing
import os
import sys
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any, Callable, Iterator

from tqdm import tqdm

from lakerag.chunking import Chunker, ChunkSpec
from lakerag.models import load_tokenizer
from lakerag.pdf_parse import PARSER_VERSION, ParsedDocument, ParseFailure, parse_pdf

# pypdf warns about every repaired cross-reference or odd font; parse failures that matter
# become failure rows, so keep worker output to errors.
logging.getLogger("pypdf").setLevel(logging.ERROR)

# Text sampled for language detection: enough for a stable guess, cheap to classify.
LANGUAGE_SAMPLE_CHARS = 4000


def content_id(*parts: Any) -> str:
    """A row id derived from what the row is made of (32 hex chars of a sha256 over JSON)."""
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:32]


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text's language (py3langid, model bundled), None if too short."""
    sample = text[:LANGUAGE_SAMPLE_CHARS]
    if sum(ch.isalpha() for ch in sample) < 40:
        return None
    import py3langid  # loads its model once per process

    return py3langid.classify(sample)[0]


def section_rows(doc_id: str, parsed: ParsedDocument) -> list[dict[str, Any]]:
    """Sections of a parsed document as silver_sections rows, ids derived from content."""
    rows: list[dict[str, Any]] = []
    open_at_level: dict[int, str] = {}  # most recent section id at each level, for parents
    for ordinal, section in enumerate(parsed.sections):
        section_id = content_id(doc_id, PARSER_VERSION, ordinal, section.heading_path, section.text)
        parents = [sid for level, sid in open_at_level.items() if level < section.level and level > 0]
        rows.append({
            "section_id": section_id, "doc_id": doc_id, "ordinal": ordinal,
            "parent_section_id": parents[-1] if parents else None,
            "heading_path": list(section.heading_path), "level": section.level, "title": section.title,
            "origin": section.origin, "page_start": section.page_start, "page_end": section.page_end,
            "text": section.text, "paragraph_pages": section.paragraph_pages,
            "parser_version": PARSER_VERSION,
        })
        open_at_level = {level: sid for level, sid in open_at_level.items() if level < section.level}
        open_at_level[section.level] = section_id
    return rows


@lru_cache(maxsize=4)
def _chunker(model: str) -> Chunker:
    """One chunker per model and process (the tokenizer loads once)."""
    return Chunker(load_tokenizer(model))


def chunk_rows(section: dict[str, Any], specs: list[ChunkSpec], tags: dict[str, str | None]) -> list[dict[str, Any]]:
    """silver_chunks rows of one section (a silver_sections row) for each strategy in `specs`."""
    rows: list[dict[str, Any]] = []
    if not specs:
        return rows
    chunker = _chunker(specs[0].model)
    tokens = chunker.tokens(section["text"])  # one tokenization serves every strategy
    for spec in specs:
        fingerprint = spec.fingerprint
        chunks = chunker.chunk(section["text"], list(section["paragraph_pages"]), spec, tokens)
        for index, chunk in enumerate(chunks):
            rows.append({
                "chunk_id": content_id(section["section_id"], fingerprint, index, chunk.text),
                "doc_id": section["doc_id"], "section_id": section["section_id"],
                "strategy": spec.strategy, "chunker_fingerprint": fingerprint, "chunk_index": index,
                "text": chunk.text, "token_count": chunk.token_count, "page_start": chunk.page_start,
                "page_end": chunk.page_end, "heading_path": list(section["heading_path"]), "tags": tags,
            })
    return rows


def parse_document(
    doc_id: str, content: bytes, source_path: str, file_name: str, passwords: tuple[str, ...],
    specs: list[ChunkSpec], run_time: datetime,
) -> dict[str, Any]:
    """One bronze document -> a staging row: sections and their chunks, or a failure reason.

    Never raises: a document that breaks the parser becomes a failure row, not a failed job.
    """
    row: dict[str, Any] = {
        "doc_id": doc_id, "parser_version": PARSER_VERSION, "source_path": source_path,
        "file_name": file_name, "title": None, "language": None, "page_count": None,
        "pages_with_text": None, "outline_entries": None, "parsed_at": run_time,
        "reason": None, "message": None, "sections": [], "chunks": [],
    }
    try:
        parsed = parse_pdf(content, file_name, passwords)
    except ParseFailure as failure:
        return row | {"reason": failure.reason, "message": failure.message}
    except Exception as err:  # noqa: BLE001 - one bad document must never stop the job
        return row | {"reason": "parser_error", "message": f"{type(err).__name__}: {err}"[:2000]}
    language = detect_language("\n\n".join(section.text for section in parsed.sections))
    sections = section_rows(doc_id, parsed)
    tags = {"doc_title": parsed.title, "file_name": file_name, "language": language}
    return row | {
        "title": parsed.title, "language": language, "page_count": parsed.page_count,
        "pages_with_text": parsed.pages_with_text, "outline_entries": parsed.outline_entries,
        "sections": sections,
        "chunks": [chunk for section in sections if section["text"].strip()
                   for chunk in chunk_rows(section, specs, tags)],
    }


def parse_task(args: tuple) -> dict[str, Any]:
    """parse_document over a tuple of its arguments (what the pool sends)."""
    return parse_document(*args)


def chunk_task(args: tuple) -> list[dict[str, Any]]:
    """chunk_rows over a tuple of its arguments (what the pool sends)."""
    return chunk_rows(*args)


def _warm_up(model: str) -> None:
    """Load what every task needs (tokenizer, language model) before the first document."""
    _chunker(model)
    detect_language("warm up the language identifier with a sentence of plain English text")


_POOLS: dict[int, Executor] = {}


@contextmanager
def _main_script_hidden() -> Iterator[None]:
    """While active, spawned processes do not re-run the parent's __main__ script.

    A spawned worker normally re-imports the parent's main script, which would re-run an
    unguarded user script or notebook; when __main__'s spec is named "__main__",
    multiprocessing skips that. Workers only need lakerag, which they import by name.
    """
    main = sys.modules["__main__"]
    saved = getattr(main, "__spec__", None)
    main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)
    try:
        yield
    finally:
        main.__spec__ = saved


def start_pool(workers: int, model: str) -> None:
    """Start `workers` processes and warm them up in the background (no-op for 1 worker).

    The pool lives as long as this process: Sail runs UDFs in this one process, so later
    batches and runs reuse it. spawn, not fork: the engine's threads make forking unsafe.
    """
    if workers <= 1 or workers in _POOLS:
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    with _main_script_hidden():  # processes start during submit
        for _ in range(workers):
            pool.submit(_warm_up, model)
    _POOLS[workers] = pool


def parallel_map(function: Callable[[Any], Any], items: list, workers: int, what: str) -> list:
    """`function` over `items`, in order: in the pool started by start_pool, else in this process.

    Shows a progress bar on a terminal (tqdm stays quiet when stderr is not one).
    """
    pool = _POOLS.get(workers)
    progress = tqdm(total=len(items), desc=what, unit="item", disable=None, leave=False)
    with progress, _main_script_hidden():  # a worker that died is replaced during map
        results = []
        mapped = pool.map(function, items, chunksize=1) if pool and len(items) > 1 else map(function, items)
        for result in mapped:
            results.append(result)
            progress.update()
        return results


def resolve_parse_workers(configured: int, engine: str) -> int:
    """0 = auto: one process per core on the embedded engine (its UDFs share one interpreter),
    1 elsewhere (Spark executors already run one Python worker per core)."""
    if configured > 0:
        return configured
    return (os.cpu_count() or 1) if engine == "sail" else 1
