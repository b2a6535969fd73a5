"""What the chat page needs from the lakehouse, read and written without a Spark engine
(delta-rs): the documents and their top sections (for the filters), a cited PDF's bytes (from
bronze), and feedback rows (appended to `serving_feedback`).
"""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lakerag.chain import BadRequest
from lakerag.engine import Lakehouse
from lakerag.tables import (
    ACTIVE,
    BRONZE_DOCUMENTS,
    SERVING_FEEDBACK,
    SILVER_DOCUMENTS,
    SILVER_SECTIONS,
    arrow_schema,
)

VERDICTS = ("up", "down")
MAX_COMMENT_CHARS = 2000
MAX_RETRIEVED_IDS = 50


@dataclass(frozen=True)
class Feedback:
    """One thumbs up/down from the page, validated."""

    question: str
    answer: str
    retrieved_ids: list[str]
    verdict: str
    comment: str | None

    @classmethod
    def parse(cls, payload: Any, max_chars: int) -> "Feedback":
        """A request body -> Feedback; raises BadRequest saying what is wrong."""
        if not isinstance(payload, dict):
            raise BadRequest('feedback must be a JSON object with "question", "answer", "verdict"')
        verdict = payload.get("verdict")
        if verdict not in VERDICTS:
            raise BadRequest(f'"verdict" must be "up" or "down", not {verdict!r}')
        texts = {name: payload.get(name) for name in ("question", "answer")}
        for name, text in texts.items():
            if not isinstance(text, str) or not text.strip() or len(text) > max_chars:
                raise BadRequest(f'"{name}" must be a non-empty string of at most {max_chars} characters')
        ids = payload.get("retrieved_ids") or []
        if not isinstance(ids, list) or len(ids) > MAX_RETRIEVED_IDS or not all(isinstance(i, str) for i in ids):
            raise BadRequest(f'"retrieved_ids" must be a list of at most {MAX_RETRIEVED_IDS} strings')
        comment = payload.get("comment") or None
        if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS):
            raise BadRequest(f'"comment" must be a string of at most {MAX_COMMENT_CHARS} characters')
        return cls(texts["question"], texts["answer"], ids, verdict, comment.strip() if comment else None)


class LakeFiles:
    """The local lakehouse tables the chat page reads and writes (Delta folders under a lake root)."""

    def __init__(self, lakehouse: Lakehouse):
        if lakehouse.root is None:
            raise ValueError("the chat page reads local Delta tables: give --lake-root")
        self.lakehouse = lakehouse
        self._write_lock = threading.Lock()  # one commit at a time: concurrent appends would race

    def _table(self, name: str, columns: list[str], where=None) -> pa.Table:
        """Rows of a table (empty when it does not exist yet)."""
        from deltalake import DeltaTable

        location = Path(self.lakehouse.location(name))
        if not (location / "_delta_log").is_dir():
            return pa.table({c: [] for c in columns})
        return DeltaTable(str(location)).to_pyarrow_dataset().to_table(columns=columns, filter=where)

    def documents(self) -> list[dict[str, Any]]:
        """Parsed documents with their top-level section titles, by title: the page's filters."""
        documents = self._table(SILVER_DOCUMENTS.name, ["doc_id", "title", "file_name"]).to_pylist()
        sections = self._table(SILVER_SECTIONS.name, ["doc_id", "heading_path", "level", "ordinal"]).to_pylist()
        tops: dict[str, list[str]] = {}
        for section in sorted(sections, key=lambda s: s["ordinal"]):
            if section["level"] == 1:
                titles = tops.setdefault(section["doc_id"], [])
                if section["heading_path"][0] not in titles:
                    titles.append(section["heading_path"][0])
        return sorted(({**d, "sections": tops.get(d["doc_id"], [])} for d in documents),
                      key=lambda d: d["title"].lower())

    def pdf(self, doc_id: str) -> bytes | None:
        """The bytes of an active bronze document, None if there is none with that id."""
        rows = self._table(BRONZE_DOCUMENTS.name, ["content"],
                           (pc.field("doc_id") == doc_id) & (pc.field("status") == ACTIVE))
        return rows.column("content")[0].as_py() if rows.num_rows else None

    def add_feedback(self, feedback: Feedback, model_uri: str, model_version: str | None,
                     user: str | None) -> str:
        """Append one feedback row; returns its id."""
        from deltalake import write_deltalake

        row = {"feedback_id": uuid.uuid4().hex, "question": feedback.question, "answer": feedback.answer,
               "retrieved_ids": feedback.retrieved_ids, "model_uri": model_uri, "model_version": model_version,
               "verdict": feedback.verdict, "comment": feedback.comment, "user": user,
               "created_at": datetime.now(timezone.utc)}
        with self._write_lock:
            write_deltalake(self.lakehouse.location(SERVING_FEEDBACK.name),
                            pa.Table.from_pylist([row], schema=arrow_schema(SERVING_FEEDBACK)), mode="append")
        return row["feedback_id"]
