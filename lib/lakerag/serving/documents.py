"""The cited PDFs the chat page opens, read from the bronze Delta table with delta-rs (no Spark
engine). The page's document list comes from the index the chain answers from
(`RagAgent.documents`), so a forgotten document leaves the list with the index."""
from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from lakerag.access.permissions import can_read


class PdfStore:
    """Bytes of active documents in a bronze Delta table at `location`."""

    def __init__(self, location: str, active_status: str = "active"):
        self.location, self.active_status = location, active_status

    def pdf(self, doc_id: str, groups: tuple[str, ...] | None = None) -> bytes | None:
        """The bytes of the active document `doc_id`, None if there is none (or no table yet);
        PermissionError when `groups` (None: no check) may read none of its paths."""
        from deltalake import DeltaTable

        if not (Path(self.location) / "_delta_log").is_dir():
            return None
        rows = DeltaTable(self.location).to_pyarrow_dataset().to_table(
            columns=["content", "groups"],
            filter=(pc.field("doc_id") == doc_id) & (pc.field("status") == self.active_status))
        if not rows.num_rows:
            return None
        if groups is not None and not any(can_read(labels or [], groups) for labels in rows.column("groups").to_pylist()):
            raise PermissionError(f"document {doc_id!r} is not readable by your groups ({', '.join(groups)})")
        return rows.column("content")[0].as_py()
