"""The feedback store: people's corrections and confirmations, in SQLite (WAL mode).

One row per distinct (input, label): the same drawing sent twice with the same label is
reported as a duplicate, not stored twice.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    model TEXT,
    version TEXT,
    input_kind TEXT NOT NULL,
    input_json TEXT,
    image BLOB,
    content_hash TEXT NOT NULL UNIQUE,
    predicted TEXT,
    label TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'new',
    client_id TEXT
);
CREATE INDEX IF NOT EXISTS feedback_status ON feedback (status);
"""


class FeedbackStore:
    """Thread-safe access to one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(SCHEMA)

    def add(
        self,
        *,
        label: str,
        input_kind: str,
        input_json: Any = None,
        image: bytes | None = None,
        model: str | None = None,
        version: str | None = None,
        predicted: Any = None,
        client_id: str | None = None,
    ) -> tuple[int, bool]:
        """Store one submission; returns (id, duplicate)."""
        digest = hashlib.sha256()
        digest.update(
            json.dumps(input_json, sort_keys=True).encode() if input_json is not None else b""
        )
        digest.update(image or b"")
        digest.update(label.encode())
        content_hash = digest.hexdigest()
        with self.lock, self.conn:
            row = self.conn.execute(
                "SELECT id FROM feedback WHERE content_hash = ?", (content_hash,)
            ).fetchone()
            if row:
                return int(row[0]), True
            cur = self.conn.execute(
                "INSERT INTO feedback (created, model, version, input_kind, input_json, image, content_hash,"
                " predicted, label, client_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    model,
                    version,
                    input_kind,
                    json.dumps(input_json) if input_json is not None else None,
                    image,
                    content_hash,
                    json.dumps(predicted) if predicted is not None else None,
                    label,
                    client_id,
                ),
            )
            return int(cur.lastrowid or 0), False

    def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = "SELECT id, created, model, version, input_kind, predicted, label, status, client_id FROM feedback"
        args: tuple[Any, ...] = ()
        if status:
            query += " WHERE status = ?"
            args = (status,)
        query += " ORDER BY id DESC LIMIT ?"
        with self.lock:
            rows = self.conn.execute(query, (*args, limit)).fetchall()
        keys = (
            "id",
            "created",
            "model",
            "version",
            "input_kind",
            "predicted",
            "label",
            "status",
            "client_id",
        )
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        for r in out:
            r["predicted"] = json.loads(r["predicted"]) if r["predicted"] else None
        return out

    def count(self) -> int:
        with self.lock:
            return int(self.conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    def close(self) -> None:
        self.conn.close()
