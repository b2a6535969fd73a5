"""Unit tests of the pure file checks: no Spark."""
from datetime import datetime

import pytest

from lakerag.ingest.bronze import Verdict, file_version, inspect_file
from tests.conftest import corpus_pdf

LIMIT = 1_000_000


def test_valid_pdf_is_admitted_with_its_hash():
    content = corpus_pdf("minimal-document.pdf").read_bytes()
    verdict = inspect_file(len(content), content, LIMIT)
    assert verdict.reason is None and verdict.message is None
    assert verdict.sha256 == __import__("hashlib").sha256(content).hexdigest()


def test_header_after_leading_junk_within_window_is_accepted():
    content = b"\x00" * 100 + corpus_pdf("minimal-document.pdf").read_bytes()
    assert inspect_file(len(content), content, LIMIT).reason is None


@pytest.mark.parametrize(
    ("size", "content", "reason"),
    [
        (0, b"", "empty_file"),
        (LIMIT + 1, None, "too_large"),
        (10, None, "vanished"),
        (24, b"Attribution-ShareAlike\n%%EOF", "not_pdf"),
        (40, b"%PDF-1.7\n1 0 obj << >> endobj\nxref", "truncated"),
    ],
)
def test_each_bad_kind_gets_its_reason_and_a_message(size, content, reason):
    verdict = inspect_file(size, content, LIMIT)
    assert verdict.reason == reason
    assert verdict.message and len(verdict.message) > 20


def test_truncated_real_pdf_is_rejected():
    content = corpus_pdf("R-data.pdf").read_bytes()
    half = content[: len(content) // 2]
    assert inspect_file(len(half), half, LIMIT).reason == "truncated"


def test_file_version_uses_hash_or_size_and_mtime():
    assert file_version(Verdict("ab"), 5, None) == "sha256:ab"
    assert file_version(Verdict(None, "too_large", "m"), 5, datetime(2026, 1, 2, 3, 4, 5)) == (
        "unread:5:2026-01-02T03:04:05"
    )
