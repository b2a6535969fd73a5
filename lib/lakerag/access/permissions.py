"""Document permissions: the groups allowed to read a document, from rules on its landing path
(`access.rules`: prefix -> groups, the longest matching prefix wins), and the check a reader
passes. Plain functions on strings: bronze labels documents with them, the query side checks."""
from __future__ import annotations

from typing import Iterable

# The group every caller belongs to, authenticated or not: Databricks' built-in `users` group,
# whose members are every workspace user. Documents no rule matches are readable by it by default.
EVERYONE = "users"


def landing_relative(source_path: str, landing_root: str) -> str:
    """`source_path` relative to the landing folder (unchanged when it lies outside it)."""
    root = landing_root[len("file:"):] if landing_root.startswith("file:") else landing_root
    root = root.rstrip("/")
    return source_path[len(root) + 1:] if source_path.startswith(root + "/") else source_path


def document_groups(relative_path: str, rules: dict[str, list[str]], default: Iterable[str]) -> list[str]:
    """The groups that may read the document at `relative_path`: those of the longest rule
    prefix it starts with, else `default`; sorted, without repeats."""
    matching = [prefix for prefix in rules if relative_path.startswith(prefix)]
    groups = rules[max(matching, key=len)] if matching else default
    return sorted(set(groups))


def can_read(document: Iterable[str], reader: Iterable[str]) -> bool:
    """True when the reader is in at least one of the document's groups."""
    return not set(document).isdisjoint(reader)
