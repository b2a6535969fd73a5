"""The cited PDFs the chat page opens, read from the bronze Delta table with delta-rs (no Spark
engine). The page's document list comes from the index the chain answers from
(`RagAgent.documents`), so a forgotten document leaves the list with the index."""
from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc


class PdfStore:
    """Bytes of active documents in a bronze Delta table at `location`."""

    def __init__(self, location: str, active_status: str = "active"):
        self.location, self.active_status = location, active_status

    def pdf(self, doc_id: str) -> bytes | None:
        """The bytes of the active document `doc_id`, None if there is none (or no table yet)."""
        from deltalake import DeltaTable

        if not (Path(self.location) / "_delta_log").is_dir():
            return None
        rows = DeltaTable(self.location).to_pyarrow_dataset().to_table(
            columns=["content"], filter=(pc.field("doc_id") == doc_id) & (pc.field("status") == self.active_status))
        return rows.column("content")[0].as_py() if rows.num_rows else None
