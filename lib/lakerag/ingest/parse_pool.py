"""One PDF -> rows for the silver tables, in plain Python; and the process pool that runs it.

This module is what parsing worker processes import, so it stays free of Spark and pandas:
a spawned worker starts in a fraction of a second.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.machinery
import inspect
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Callable, Iterator

from tqdm import tqdm

from lakerag.ingest.chunking import PARAGRAPH_BREAK, Chunker, ChunkSpec
from lakerag.weights import load_tokenizer
from lakerag.ingest.ocr import OcrOptions
from lakerag.ingest.pdf_parse import ParsedDocument, ParseFailure, parse_pdf, parser_version, valid_unicode
from lakerag.ingest.section_links import NEXT, PARENT
from lakerag.markdown_tables import is_table

# pypdf warns about every repaired cross-reference or odd font; parse_pdf collects those
# warnings into the document's row, so keep worker output to errors.
logging.getLogger("pypdf").setLevel(logging.ERROR)
log = logging.getLogger(__name__)

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
        section_id = content_id(doc_id, parsed.parser_version, ordinal, section.heading_path, section.text)
        parents = [sid for level, sid in open_at_level.items() if level < section.level and level > 0]
        rows.append({
            "section_id": section_id, "doc_id": doc_id, "ordinal": ordinal,
            "parent_section_id": parents[-1] if parents else None,
            "heading_path": list(section.heading_path), "level": section.level, "title": section.title,
            "origin": section.origin, "page_start": section.page_start, "page_end": section.page_end,
            "text": section.text, "paragraph_pages": section.paragraph_pages,
            "parser_version": parsed.parser_version, "table_boxes": section.table_boxes,
        })
        open_at_level = {level: sid for level, sid in open_at_level.items() if level < section.level}
        open_at_level[section.level] = section_id
    return rows


def link_rows(doc_id: str, parsed: ParsedDocument, sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """silver_section_links rows: the parsed links and references, each section's parent and the
    section after it (ids from `sections`, the document's section_rows)."""
    ids = [row["section_id"] for row in sections]

    def row(source: str, target: str | None, kind: str, text: str, page: int) -> dict[str, Any]:
        return {"link_id": content_id(source, kind, target, text), "doc_id": doc_id, "from_section_id": source,
                "to_section_id": target, "kind": kind, "text": text, "page": page, "parser_version": parsed.parser_version}

    rows = {}
    for link in parsed.links:
        edge = row(ids[link.source], ids[link.target] if link.target is not None else None, link.kind, link.text,
                   link.page)
        rows.setdefault(edge["link_id"], edge)
    for position, section in enumerate(sections):
        if section["parent_section_id"]:
            edge = row(section["section_id"], section["parent_section_id"], PARENT, "", section["page_start"])
            rows[edge["link_id"]] = edge
        if position + 1 < len(sections):
            edge = row(section["section_id"], ids[position + 1], NEXT, "", section["page_start"])
            rows[edge["link_id"]] = edge
    return list(rows.values())


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
    # A table (a Markdown paragraph, see pdf_parse.place_table) is a chunk of its own, whole, for
    # every strategy; the text chunks are cut from the rest of the section.
    paragraphs = list(zip(section["text"].split(PARAGRAPH_BREAK), section["paragraph_pages"]))
    tables = [(text, page) for text, page in paragraphs if is_table(text)]
    stored = section.get("table_boxes")  # null in a section parsed before table boxes were kept
    boxes = [[float(v) for v in box] for box in stored] if stored is not None else []
    text_part = [(text, page) for text, page in paragraphs if not is_table(text)] if tables else paragraphs
    text = PARAGRAPH_BREAK.join(p for p, _ in text_part)
    tokens = chunker.tokens(text) if text.strip() else None  # one tokenization serves every strategy
    for spec in specs:
        fingerprint = spec.fingerprint
        pieces = [(c.text, c.token_count, c.page_start, c.page_end, "text", None)
                  for c in (chunker.chunk(text, [page for _, page in text_part], spec, tokens) if tokens else [])]
        pieces += [(table, chunker.count(table), page, page, "table", boxes[i] if i < len(boxes) else None)
                   for i, (table, page) in enumerate(tables)]
        for index, (piece, count, first, last, kind, box) in enumerate(pieces):
            rows.append({
                "chunk_id": content_id(section["section_id"], fingerprint, index, piece),
                "doc_id": section["doc_id"], "section_id": section["section_id"],
                "strategy": spec.strategy, "chunker_fingerprint": fingerprint, "chunk_index": index,
                "text": piece, "token_count": count, "page_start": first,
                "page_end": last, "heading_path": list(section["heading_path"]), "tags": tags, "chunk_kind": kind,
                "bbox": box,
            })
    return rows


@dataclass(frozen=True)
class ParseLimits:
    """Per-document bounds on one parse (0 = no bound); see silver.max_* in conf/."""

    max_pages: int = 0
    max_seconds: float = 0
    max_memory_mb: int = 0


class ParseOverLimit(BaseException):
    """Raised into a parse that went over a bound; `reason` is timeout or memory_limit.

    A BaseException, so that the broad `except Exception` blocks in pypdf and in our page
    loop cannot swallow it (pypdf also catches MemoryError, which is why memory is watched
    rather than capped with an rlimit).
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# How often a bounded parse checks its clock and memory.
LIMIT_CHECK_SECONDS = 0.05


def _resident_bytes() -> int | None:
    """This process's resident memory (Linux /proc), None where unknown."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


@contextmanager
def bounded(limits: ParseLimits) -> Iterator[None]:
    """Run the body with at most `limits.max_seconds` of wall time and `limits.max_memory_mb`
    of resident-memory growth: ParseOverLimit is raised into it when it goes over.

    A timer signal checks both every LIMIT_CHECK_SECONDS, so this needs the main thread; Python
    runs the check between bytecodes, so one long call into C code overruns until it returns.
    The memory bound needs a process of our own (the parsing pool's workers): elsewhere other
    threads' memory would count, and it is skipped. A single allocation too big to be seen
    by the check kills the worker instead, which parallel_map turns into a worker_crashed row.
    """
    start = _resident_bytes()
    watch_memory = limits.max_memory_mb > 0 and multiprocessing.parent_process() is not None and start is not None
    ceiling = start + limits.max_memory_mb * 1024 * 1024 if watch_memory else None
    deadline = time.monotonic() + limits.max_seconds if limits.max_seconds > 0 else None
    if (ceiling is None and deadline is None) or threading.current_thread() is not threading.main_thread():
        yield
        return

    fired = False

    def check(signum, frame):
        # Raise once: a later tick must not interrupt the cleanup below (the timer would stay armed).
        nonlocal fired
        if fired:
            return
        if deadline is not None and time.monotonic() > deadline:
            fired = True
            raise ParseOverLimit("timeout")
        if ceiling is not None and (_resident_bytes() or 0) > ceiling:
            fired = True
            raise ParseOverLimit("memory_limit")

    saved_handler = signal.signal(signal.SIGALRM, check)
    signal.setitimer(signal.ITIMER_REAL, LIMIT_CHECK_SECONDS, LIMIT_CHECK_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, saved_handler)


def _empty_row(doc_id: str, source_path: str, file_name: str, run_time: datetime, version: str) -> dict[str, Any]:
    return {
        "doc_id": doc_id, "parser_version": version, "source_path": source_path,
        "file_name": file_name, "title": None, "language": None, "page_count": None,
        "pages_with_text": None, "outline_entries": None, "warnings": [], "parsed_at": run_time,
        "reason": None, "message": None, "sections": [], "chunks": [], "links": [], "ocr_pages": None,
        "layout_pages": None,
    }


def parse_document(
    doc_id: str, content: bytes, source_path: str, file_name: str, passwords: tuple[str, ...],
    specs: list[ChunkSpec], run_time: datetime, limits: ParseLimits = ParseLimits(), ocr: OcrOptions | None = None,
    tables: bool = False, layout: bool = False,
) -> dict[str, Any]:
    """One bronze document -> a staging row: sections and their chunks, or a failure reason.

    Never raises: a document that breaks the parser or goes over a limit becomes a failure row,
    not a failed job.
    """
    row = _empty_row(doc_id, source_path, file_name, run_time, parser_version(ocr, tables, layout))
    if ocr is not None and limits.max_seconds:
        # OCR stops in time for the parse to finish: a long scan keeps the pages it has read
        ocr = dataclasses.replace(ocr, document_seconds=0.8 * limits.max_seconds)
    try:
        with bounded(limits):
            parsed = parse_pdf(content, file_name, passwords, limits.max_pages, ocr, tables, layout)
    except ParseFailure as failure:
        return row | {"reason": failure.reason, "message": valid_unicode(failure.message)}
    except ParseOverLimit as over:
        bound = (f"took over silver.max_parse_seconds={limits.max_seconds:g} s" if over.reason == "timeout"
                 else f"needed over silver.max_parse_memory_mb={limits.max_memory_mb} MB")
        return row | {"reason": over.reason,
                      "message": f"parsing {bound}: raise the limit in conf/ if the document is legitimate"}
    except Exception as err:  # noqa: BLE001 - one bad document must never stop the job
        # the message may quote the PDF: keep it encodable like the text
        return row | {"reason": "parser_error", "message": valid_unicode(f"{type(err).__name__}: {err}"[:2000])}
    language = detect_language("\n\n".join(section.text for section in parsed.sections))
    sections = section_rows(doc_id, parsed)
    tags = {"doc_title": parsed.title, "file_name": file_name, "language": language}
    return row | {
        "title": parsed.title, "language": language, "page_count": parsed.page_count,
        "pages_with_text": parsed.pages_with_text, "outline_entries": parsed.outline_entries,
        "warnings": [valid_unicode(w) for w in parsed.warnings], "ocr_pages": parsed.ocr_pages,
        "layout_pages": parsed.layout_pages, "sections": sections,
        "chunks": [chunk for section in sections if section["text"].strip()
                   for chunk in chunk_rows(section, specs, tags)],
        "links": link_rows(doc_id, parsed, sections),
    }


def crashed_parse(args: tuple, message: str) -> dict[str, Any]:
    """The failure row of a document whose parsing process died (what parallel_map's on_crash gets)."""
    a = inspect.signature(parse_document).bind(*args)
    a.apply_defaults()
    doc_id, source_path, file_name, run_time = (a.arguments[k] for k in ("doc_id", "source_path", "file_name", "run_time"))
    return _empty_row(doc_id, source_path, file_name, run_time,
                      parser_version(a.arguments["ocr"], a.arguments["tables"], a.arguments["layout"])) | {"reason": "worker_crashed", "message": message}


def parse_task(args: tuple) -> dict[str, Any]:
    """parse_document over a tuple of its arguments (what the pool sends)."""
    return parse_document(*args)


def chunk_task(args: tuple) -> list[dict[str, Any]]:
    """chunk_rows over a tuple of its arguments (what the pool sends)."""
    return chunk_rows(*args)


# How often a pool worker checks that the process that started it is still alive.
ORPHAN_CHECK_SECONDS = 1.0


def _exit_when_orphaned() -> None:
    """Pool worker initializer: exit once the parent process is gone (SIGKILLed jobs would
    otherwise leave their parsing workers running). A thread polls the parent pid rather than
    using prctl(PR_SET_PDEATHSIG), which fires when the *thread* that spawned the worker ends."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


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


_POOL_MODELS: dict[int, str] = {}
# Sail may run several partitions' UDFs in threads at once: one restart of a broken pool.
_POOL_LOCK = threading.Lock()


def start_pool(workers: int, model: str) -> None:
    """Start `workers` processes and warm them up in the background.

    Parsing always runs in this pool, even with one worker, so that a document's time and
    memory bounds and a crash stay inside a process of its own. The pool lives as long as
    this process: Sail runs UDFs in this one process, so later batches and runs reuse it.
    spawn, not fork: the engine's threads make forking unsafe.
    """
    if workers in _POOLS:
        return
    pool = ProcessPoolExecutor(max(workers, 1), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_when_orphaned)
    with _main_script_hidden():  # processes start during submit
        for _ in range(max(workers, 1)):
            pool.submit(_warm_up, model)
    _POOLS[workers] = pool
    _POOL_MODELS[workers] = model


def _restart_pool(workers: int, broken: Executor) -> Executor:
    """Replace `broken`, a pool whose worker died (it refuses new work), unless another thread
    already did; returns the pool to use."""
    with _POOL_LOCK:
        if _POOLS.get(workers) is broken:
            _POOLS.pop(workers).shutdown(wait=False, cancel_futures=True)
            start_pool(workers, _POOL_MODELS[workers])
        return _POOLS[workers]


def parallel_map(
    function: Callable[[Any], Any], items: list, workers: int, what: str,
    on_crash: Callable[[Any, str], Any] | None = None,
) -> list:
    """`function` over `items`, in order: in the pool started by start_pool, else in this process.

    If a worker process dies (killed for memory, a crash in native code), the items not yet
    done run again one at a time in a fresh pool; an item that kills its worker alone gets
    `on_crash(item, message)` as its result (without on_crash the error propagates).
    Shows a progress bar on a terminal (tqdm stays quiet when stderr is not one).
    """
    pool = _POOLS.get(workers)
    progress = tqdm(total=len(items), desc=what, unit="item", disable=None, leave=False)
    with progress, _main_script_hidden():  # a worker that died is replaced during map
        if pool is None:
            return [_counted(function(item), progress) for item in items]
        results: list = []
        try:
            for result in pool.map(function, items, chunksize=1):
                results.append(_counted(result, progress))
        except BrokenProcessPool:
            pool = _restart_pool(workers, pool)  # a broken pool refuses all later work
            if on_crash is None:
                raise
            log.warning("a %s worker died; running the remaining %d item(s) one at a time",
                        what, len(items) - len(results))
            for item in items[len(results):]:
                try:
                    result = pool.submit(function, item).result()
                except BrokenProcessPool:
                    result = on_crash(item, f"the {what} process died on this item (killed for "
                                            "memory by the OS, or a crash in native code)")
                    pool = _restart_pool(workers, pool)
                results.append(_counted(result, progress))
        return results


def _counted(result: Any, progress: tqdm) -> Any:
    progress.update()
    return result


def resolve_parse_workers(configured: int, engine: str) -> int:
    """0 = auto: one process per core on the embedded engine (its UDFs share one interpreter),
    1 elsewhere (Spark executors already run one Python worker per core)."""
    if configured > 0:
        return configured
    return (os.cpu_count() or 1) if engine == "sail" else 1
