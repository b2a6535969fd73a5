"""The live index: a running chain swaps in a newer index version once it is built, at most every
retrieval.index_refresh_s seconds, and keeps what it has when the root is emptied."""
from __future__ import annotations

from pathlib import Path

from lakerag.retrieval.live_index import LiveIndex


class Folder:
    """Stands in for a Retriever: it only needs to know its folder."""

    def __init__(self, folder: Path):
        self.folder = folder


def test_a_newer_version_replaces_the_loaded_one_on_the_next_check_and_a_missing_root_keeps_it():
    versions = [Path("v1")]

    def newest() -> Path:
        if not versions:
            raise FileNotFoundError("no index")
        return versions[-1]

    loaded = []
    live = LiveIndex(newest, lambda folder: loaded.append(folder) or Folder(folder), refresh_s=0)
    assert (live.refresh(), live.current.folder) == (False, Path("v1"))
    versions.append(Path("v2"))
    assert (live.refresh(), live.current.folder, loaded) == (True, Path("v2"), [Path("v1"), Path("v2")])
    versions.clear()
    assert (live.refresh(), live.current.folder) == (False, Path("v2"))


def test_no_check_before_refresh_s_has_passed():
    versions = [Path("v1")]
    live = LiveIndex(lambda: versions[-1], Folder, refresh_s=3600)
    versions.append(Path("v2"))
    assert (live.refresh(), live.current.folder) == (False, Path("v1"))
