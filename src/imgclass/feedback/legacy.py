"""Databases made by the first feedback store (plain sqlite3, no migrations).

That store created a ``feedback`` table with the columns ``created``, ``version``,
``input_json`` and ``predicted`` and never recorded a schema version. When such a
database is opened, its table is renamed aside, the migrations create the current
schema, and the rows are copied over (content hashes recomputed the current way), all
in the migration's transaction: the conversion happens completely or not at all.
Any other table called ``feedback`` in a database without our migration history is
refused: it is not ours to change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, inspect, text

from imgclass.errors import FeedbackError
from imgclass.feedback.content import content_hash, normalise_strokes, strokes_to_json
from imgclass.feedback.schema import STATUSES, Feedback
from imgclass.safejson import JSONRefused, loads

log = logging.getLogger(__name__)

LEGACY_COLUMNS = {"id", "created", "input_kind", "input_json", "image", "content_hash", "label"}
ASIDE = "feedback_legacy"


@dataclass
class LegacyTable:
    """A first-version table renamed aside, waiting to be copied into the new schema."""

    name: str

    def copy_rows(self, conn: Connection) -> int:
        """Copy every row into ``feedback`` (duplicates under the new hashing once), then
        drop the old table. Returns the rows copied."""
        rows = conn.execute(text(f"SELECT * FROM {self.name} ORDER BY id")).mappings().all()
        seen: set[str] = set()
        values = []
        for row in rows:
            value = _convert(row)
            if value is not None and value["content_hash"] not in seen:
                seen.add(value["content_hash"])
                values.append(value)
        if values:
            conn.execute(insert(Feedback), values)
        conn.execute(text(f"DROP TABLE {self.name}"))
        log.warning("converted %d feedback rows from the first store's schema", len(values))
        return len(values)


def adopt_legacy_table(conn: Connection) -> LegacyTable | None:
    """Rename a first-version ``feedback`` table aside; None when there is none.

    FeedbackError when the database has a ``feedback`` table that is neither ours nor
    the first version's."""
    tables = set(inspect(conn).get_table_names())
    if "feedback" not in tables or "alembic_version" in tables:
        return None
    columns = {c["name"] for c in inspect(conn).get_columns("feedback")}
    if not columns >= LEGACY_COLUMNS:
        raise FeedbackError(
            "this database has a table 'feedback' that imgclass did not make (columns: "
            f"{', '.join(sorted(columns))}); point the feedback store at another database"
        )
    conn.execute(text(f"ALTER TABLE feedback RENAME TO {ASIDE}"))
    conn.execute(text("DROP INDEX IF EXISTS feedback_status"))
    return LegacyTable(ASIDE)


def _convert(row: Any) -> dict[str, Any] | None:
    """The row in the new schema; None for a row with no usable input."""
    strokes_json = None
    if row["input_json"]:
        raw = row["input_json"]
        try:  # nesting and huge integers are refused like any bad drawing, not raised
            strokes = loads(raw if isinstance(raw, bytes) else str(raw).encode())
            strokes_json = strokes_to_json(normalise_strokes(strokes))
        except (JSONRefused, FeedbackError):
            strokes_json = None
    image = row["image"]
    if strokes_json is None and not image:
        return None
    status = row.get("status") if row.get("status") in STATUSES else "new"
    return {
        "created_at": _parse_time(row["created"]),
        "model": row.get("model"),
        "model_version": row.get("version"),
        "input_kind": "image" if strokes_json is None and image else "strokes",
        "strokes_json": strokes_json,
        "image": image,
        "content_hash": content_hash(str(row["label"]), strokes_json, image),
        "predicted_json": row.get("predicted"),
        "label": str(row["label"]),
        "status": status,
        "client_id": row.get("client_id"),
    }


def _parse_time(value: Any) -> datetime:
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return datetime.now(UTC).replace(tzinfo=None)
