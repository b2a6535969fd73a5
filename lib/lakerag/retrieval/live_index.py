"""The index a running chain answers from: resolved when the chain loads and followed while it
runs, so a rebuilt index (new documents, a forgotten one) is served without re-registering."""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lakerag.retrieval.index_files import latest_index
from lakerag.retrieval.retriever import Filters, Hit, Retriever
from lakerag.settings import Settings

log = logging.getLogger(__name__)
INDEX_ROOT_ENV = "LAKERAG_INDEX_ROOT"


class LiveIndex:
    """A retriever over the newest index version under a root; every `refresh_s` seconds (0:
    every search) it looks for a newer version and swaps it in once loaded."""

    def __init__(self, newest: Callable[[], Path], load: Callable[[Path], Retriever], refresh_s: float):
        self._newest, self._load, self.refresh_s = newest, load, refresh_s
        self.current = load(newest())
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, root: Path | None = None) -> "LiveIndex":
        """The configured model and strategy's newest index under `root`, else $LAKERAG_INDEX_ROOT,
        else retrieval.index_root."""
        root = root or os.environ.get(INDEX_ROOT_ENV) or settings.retrieval.index_root
        if not root:
            raise ValueError(f"no index root: set retrieval.index_root or ${INDEX_ROOT_ENV}")
        return cls(lambda: latest_index(Path(root), settings), lambda folder: Retriever.from_settings(folder, settings),
                   settings.retrieval.index_refresh_s)

    def refresh(self) -> bool:
        """Swap in a newer index version if there is one (at most every refresh_s); True if swapped."""
        if time.monotonic() - self._checked < self.refresh_s:
            return False
        with self._lock:
            self._checked = time.monotonic()
            try:
                newest = self._newest()
            except FileNotFoundError as err:  # the root was emptied: keep answering from what is loaded
                log.warning("keeping index %s: %s", self.current.folder, err)
                return False
            if newest == self.current.folder:
                return False
            log.info("index %s replaces %s", newest, self.current.folder)
            self.current = self._load(newest)
            return True

    def search(self, query: str, k: int = 5, mode: str = "hybrid", filters: Filters = Filters(),
               rerank: bool = True) -> list[Hit]:
        """`Retriever.search` on the newest index version."""
        self.refresh()
        return self.current.search(query, k=k, mode=mode, filters=filters, rerank=rerank)

    def linked(self, query: str, hit: Hit, limit: int, filters: Filters = Filters(),
               exclude: set[str] | frozenset[str] = frozenset()) -> list[Hit]:
        """`Retriever.linked` on the index in use (the one that found `hit`)."""
        return self.current.linked(query, hit, limit, filters, exclude)

    def embed(self, texts: list[str]) -> np.ndarray:
        """`Retriever.embed` of the index in use."""
        return self.current.embed(texts)

    @property
    def version(self) -> dict[str, Any]:
        """The version of the index in use."""
        return self.current.version

    def documents(self, groups: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """The documents of the newest index version that `groups` may read (None: all)."""
        self.refresh()
        return self.current.documents(groups)
