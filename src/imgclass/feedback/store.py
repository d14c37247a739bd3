"""The feedback store: people's confirmations and corrections, in any SQL database.

``FeedbackStore(url)`` opens (and migrates to the newest schema) an SQLite file or any
SQLAlchemy URL; the server, the CLI and retraining all go through it. One engine per
store, one short transaction per call.

De-duplication is done by the database, not by a look-up first: ``add`` inserts, and
when the unique index on ``content_hash`` refuses the row, the existing row's id is
returned with ``duplicate=True``. That is correct however many threads or server
processes post the same drawing at the same moment.

One drawing gets one answer: a submission with a ``drawing_id`` replaces, in place and in
one transaction, the answer stored earlier under that id (same row id, status back to
``new``); the unique index on ``drawing_id`` keeps two concurrent first answers for one
drawing from both staying (the loser tries again and replaces the winner's).

An SQLite file deleted or replaced while the store is open (``db.FileWatch``) makes every
call fail with ``FeedbackUnavailable``, checked before each transaction and again after
each write's commit: a row that went to a file no longer at the path is never
acknowledged. The first time, the reason and the path are logged as an error.
"""

from __future__ import annotations

import builtins
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Select, case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from imgclass.errors import FeedbackError
from imgclass.feedback import db
from imgclass.feedback.content import (
    content_hash,
    label_problem,
    normalise_strokes,
    strokes_to_json,
)
from imgclass.feedback.schema import DRAWING_ID_MAX, INPUT_KINDS, SOURCES, STATUSES, Feedback

log = logging.getLogger(__name__)

ID_BATCH = 500  # ids per statement in bulk updates and deletes
PAGE = 256  # rows per query when iterating over inputs


Q = TypeVar("Q", bound="Select[*tuple[Any, ...]]")


class FeedbackNotFound(FeedbackError, LookupError):
    """No submission has this id."""


class FeedbackConflict(FeedbackError):
    """An answer for a drawing id that another client answered: it is theirs to change."""


class FeedbackUnavailable(FeedbackError):
    """The database did not answer in time (locked for too long, or unreachable)."""


@dataclass(frozen=True)
class FeedbackItem:
    """One submission's input, for export and retraining.

    strokes: the drawing as sent, ``[[x...], [y...](, [t...])]`` per stroke, or None;
    image: the image file's bytes (PNG/JPEG...) or None; created: ISO 8601 UTC;
    source: where it came from (``schema.SOURCES``).
    """

    id: int
    label: str
    input_kind: str
    strokes: list[Any] | None
    image: bytes | None
    content_hash: str
    created: str
    source: str = "api"


# The columns listed without the raw input.
_SUMMARY = (
    Feedback.id,
    Feedback.created_at,
    Feedback.model,
    Feedback.model_version,
    Feedback.input_kind,
    Feedback.predicted_json,
    Feedback.label,
    Feedback.status,
    Feedback.client_id,
    Feedback.content_hash,
    Feedback.reviewed_at,
    Feedback.source,
    Feedback.drawing_id,
    Feedback.prompt,
    Feedback.recognized,
)


class FeedbackStore:
    """Submissions in a database given by a SQLAlchemy URL (``sqlite:///path`` or any
    other); the schema is upgraded to the newest migration on open."""

    def __init__(self, url: str) -> None:
        self.url = db.to_url(url)
        self.engine = db.make_engine(self.url)
        try:
            db.upgrade(self.engine)
            path = db.sqlite_path(self.url)
            self._watch = db.FileWatch(path) if path is not None else None
        except BaseException:
            self.engine.dispose()
            raise
        self._reported: str | None = None  # the last problem logged
        self._report_lock = threading.Lock()

    @classmethod
    def from_path_or_url(cls, value: str | Path) -> FeedbackStore:
        """A store from a URL, or from a plain path (an SQLite file, created if needed)."""
        return cls(db.to_url(value).render_as_string(hide_password=False))

    def __repr__(self) -> str:
        return f"FeedbackStore({db.describe(self.url)!r})"

    @property
    def location(self) -> str:
        """Where the data is, safe to print (passwords hidden)."""
        return db.describe(self.url)

    # --- the database's health ----------------------------------------------------------

    def problem(self) -> str | None:
        """Why the store cannot be used now (its SQLite file was deleted or replaced while
        open), or None. A change is logged once: an error with the path when it breaks."""
        reason = self._watch.problem() if self._watch is not None else None
        if reason != self._reported:
            self._report(reason)
        return reason

    def _report(self, reason: str | None) -> None:
        with self._report_lock:
            if reason == self._reported:
                return
            self._reported = reason
        if reason is not None:
            log.error(
                "feedback database %s: %s; refusing every read and write (nothing is "
                "acknowledged) until the opened file is back at its path or the server "
                "is restarted",
                self.location,
                reason,
            )
        else:
            log.warning(
                "feedback database %s: the opened file is back; in use again", self.location
            )

    def _check(self, consequence: str = "") -> None:
        reason = self.problem()
        if reason is not None:
            raise FeedbackUnavailable(
                f"the feedback database is unavailable: {reason}{consequence}"
            )

    @contextmanager
    def _connect(self, *, write: bool = False, lost: str = "") -> Iterator[Connection]:
        """A connection (in a transaction committed on exit when ``write``), checked to be
        on the file at the path before, and for a write after the commit too (``lost``
        then says what did not happen); the database not answering: FeedbackUnavailable."""
        self._check()
        try:
            with self.engine.begin() if write else self.engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise FeedbackUnavailable(
                f"the feedback database is unavailable ({exc.orig})"
            ) from None
        if write:
            self._check(lost)

    # --- writing -----------------------------------------------------------------------

    def add(
        self,
        *,
        label: str,
        input_kind: str,
        strokes: Any = None,
        image: bytes | None = None,
        model: str | None = None,
        version: str | None = None,
        predicted: Any = None,
        client_id: str | None = None,
        source: str = "api",
        drawing_id: str | None = None,
        prompt: str | None = None,
        recognized: bool | None = None,
    ) -> tuple[int, bool]:
        """Store one submission in one transaction; returns (id, duplicate).

        A duplicate (the same normalised input with the same label) is not stored again:
        its answer is the id of the row stored first. With a ``drawing_id``, the answer
        stored earlier under that id is replaced by this one (one drawing, one answer:
        the latest), keeping its row id; only the client that gave the first answer (the
        same ``client_id``, or both without one) may replace it: another client's answer
        for that drawing id is refused (FeedbackConflict) and changes nothing."""
        row = _new_row(label, input_kind, strokes, image, model, version, predicted, client_id)
        row.update(_origin(source, drawing_id, prompt, recognized))
        for _ in range(3):  # a concurrent answer for the same drawing, or a deleted row
            try:
                with self._connect(write=True, lost="; the submission was not stored") as conn:
                    found = _insert_or_find(conn, row)
                if found is not None:
                    return found
            except IntegrityError:
                continue
        raise FeedbackError("could not store the submission (it kept changing); try again")

    def set_status(self, ids: Sequence[int], status: str) -> int:
        """Mark submissions ``new``, ``accepted`` or ``rejected``; returns the rows found."""
        check_status(status)
        now = _utcnow()
        changed = 0
        with self._connect(write=True, lost="; no status was changed") as conn:
            for part in _batches(ids):
                result = conn.execute(
                    update(Feedback)
                    .where(Feedback.id.in_(part))
                    .values(status=status, reviewed_at=None if status == "new" else now)
                )
                changed += int(result.rowcount or 0)
        return changed

    def delete(self, ids: Sequence[int]) -> int:
        """Delete submissions; returns how many existed."""
        deleted = 0
        with self._connect(write=True, lost="; nothing was deleted") as conn:
            for part in _batches(ids):
                result = conn.execute(delete(Feedback).where(Feedback.id.in_(part)))
                deleted += int(result.rowcount or 0)
        return deleted

    # --- reading -----------------------------------------------------------------------

    def list(
        self,
        *,
        status: str | None = None,
        label: str | None = None,
        model: str | None = None,
        source: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[dict[str, Any]]:
        """Submissions, newest first, without their raw input."""
        if limit < 0 or offset < 0:
            raise FeedbackError("limit and offset must not be negative")
        query = _filtered(select(*_SUMMARY), status, label, model, source)
        query = query.order_by(Feedback.id.desc()).limit(limit).offset(offset)
        with self._connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_summary(r) for r in rows]

    def get(self, id: int, *, with_input: bool = False) -> dict[str, Any]:
        """One submission (with ``strokes`` and ``image`` bytes when ``with_input``);
        FeedbackNotFound when there is no such id."""
        columns = (*_SUMMARY, Feedback.strokes_json, Feedback.image) if with_input else _SUMMARY
        with self._connect() as conn:
            row = conn.execute(select(*columns).where(Feedback.id == id)).mappings().first()
        if row is None:
            raise FeedbackNotFound(f"no feedback with id {id}")
        out = _summary(row)
        if with_input:
            out["strokes"] = json.loads(row["strokes_json"]) if row["strokes_json"] else None
            out["image"] = row["image"]
        return out

    def count(
        self,
        status: str | None = None,
        *,
        label: str | None = None,
        model: str | None = None,
        source: str | None = None,
    ) -> int:
        """How many submissions match the filters."""
        query = _filtered(select(func.count(Feedback.id)), status, label, model, source)
        with self._connect() as conn:
            return int(conn.execute(query).scalar_one())

    def counts(self) -> dict[str, Any]:
        """Submissions per status and per (label, status): ``{"status": {...},
        "label": {label: {status: n}}}``."""
        query = select(Feedback.label, Feedback.status, func.count(Feedback.id)).group_by(
            Feedback.label, Feedback.status
        )
        with self._connect() as conn:
            rows = conn.execute(query).all()
        per_status = dict.fromkeys(STATUSES, 0)
        per_label: dict[str, dict[str, int]] = {}
        for label, status, n in rows:
            per_status[status] = per_status.get(status, 0) + int(n)
            per_label.setdefault(label, dict.fromkeys(STATUSES, 0))[status] = int(n)
        return {"status": per_status, "label": dict(sorted(per_label.items()))}

    def labels_in_use(self, *, model: str | None, client_id: str | None = None) -> set[str]:
        """The distinct labels of the submissions for ``model`` (and from ``client_id``)
        that were not rejected: what counts against the caps on new labels."""
        query = select(Feedback.label).distinct().where(Feedback.status != "rejected")
        query = query.where(
            Feedback.model == model if model is not None else Feedback.model.is_(None)
        )
        if client_id is not None:
            query = query.where(Feedback.client_id == client_id)
        with self._connect() as conn:
            return set(conn.execute(query).scalars())

    def game_results(self, *, model: str | None = None) -> dict[str, tuple[int, int]]:
        """The game's rounds per prompted word: ``{word: (played, recognised)}`` (rounds
        for ``model`` when given; rejected rounds count too: they were played)."""
        won = func.sum(case((Feedback.recognized.is_(True), 1), else_=0))
        query = select(Feedback.prompt, func.count(Feedback.id), won).where(
            Feedback.source == "game", Feedback.prompt.is_not(None)
        )
        if model is not None:
            query = query.where(Feedback.model == model)
        with self._connect() as conn:
            rows = conn.execute(query.group_by(Feedback.prompt)).all()
        return {str(word): (int(n), int(w or 0)) for word, n, w in rows}

    def iter_inputs(
        self, *, status: str | None = "accepted", model: str | None = None
    ) -> Iterator[FeedbackItem]:
        """Every matching submission with its input, oldest first, a page at a time (so
        memory stays bounded and no transaction stays open while the caller works)."""
        last = 0
        while True:
            query = _filtered(
                select(
                    Feedback.id,
                    Feedback.label,
                    Feedback.input_kind,
                    Feedback.strokes_json,
                    Feedback.image,
                    Feedback.content_hash,
                    Feedback.created_at,
                    Feedback.source,
                ),
                status,
                None,
                model,
            )
            query = query.where(Feedback.id > last).order_by(Feedback.id).limit(PAGE)
            with self._connect() as conn:
                rows = conn.execute(query).all()
            for r in rows:
                strokes = json.loads(r.strokes_json) if r.strokes_json else None
                yield FeedbackItem(
                    int(r.id), r.label, r.input_kind, strokes, r.image, r.content_hash,
                    _iso(r.created_at) or "", r.source,
                )  # fmt: skip
            if len(rows) < PAGE:
                return
            last = int(rows[-1].id)

    def revision(self) -> str | None:
        """The schema's migration revision."""
        with self._connect() as conn:
            return db.current_revision(conn)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def check_status(status: str | None) -> None:
    """FeedbackError unless ``status`` is None or one of STATUSES."""
    if status is not None and status not in STATUSES:
        raise FeedbackError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")


def check_source(source: str | None) -> None:
    """FeedbackError unless ``source`` is None or one of SOURCES."""
    if source is not None and source not in SOURCES:
        raise FeedbackError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")


def _filtered(
    query: Q, status: str | None, label: str | None, model: str | None, source: str | None = None
) -> Q:
    check_status(status)
    check_source(source)
    if source is not None:
        query = query.where(Feedback.source == source)
    if status is not None:
        query = query.where(Feedback.status == status)
    if label is not None:
        query = query.where(Feedback.label == label)
    if model is not None:
        query = query.where(Feedback.model == model)
    return query


def _new_row(
    label: str,
    input_kind: str,
    strokes: Any,
    image: bytes | None,
    model: str | None,
    version: str | None,
    predicted: Any,
    client_id: str | None,
) -> dict[str, Any]:
    """The values of a new row, checked; FeedbackError for what cannot be stored."""
    if not isinstance(label, str) or not label.strip():
        raise FeedbackError("a label is required")
    problem = label_problem(label)
    if problem is not None:
        raise FeedbackError(f"label {label!r}: {problem}")
    if input_kind not in INPUT_KINDS:
        raise FeedbackError(f"input_kind must be one of {', '.join(INPUT_KINDS)}")
    strokes_json = strokes_to_json(normalise_strokes(strokes)) if strokes is not None else None
    if image is not None and not isinstance(image, bytes | bytearray):
        raise FeedbackError("image must be the bytes of an image file")
    image = bytes(image) if image else None
    if (input_kind == "strokes" and strokes_json is None) or (
        input_kind == "image" and image is None
    ):
        raise FeedbackError(f"an input of kind {input_kind!r} needs its {input_kind}")
    return {
        "created_at": _utcnow(),
        "model": model,
        "model_version": version,
        "input_kind": input_kind,
        "strokes_json": strokes_json,
        "image": image,
        "content_hash": content_hash(label, strokes_json, image),
        "predicted_json": json.dumps(predicted) if predicted is not None else None,
        "label": label,
        "status": "new",
        "client_id": client_id,
    }


def _origin(
    source: str, drawing_id: str | None, prompt: str | None, recognized: bool | None
) -> dict[str, Any]:
    """The columns saying where a submission came from, checked."""
    check_source(source)
    if drawing_id is not None and not (
        isinstance(drawing_id, str) and 0 < len(drawing_id) <= DRAWING_ID_MAX
    ):
        raise FeedbackError(f"drawing_id must be 1 to {DRAWING_ID_MAX} characters")
    if prompt is not None and label_problem(prompt) is not None:
        raise FeedbackError(f"prompt {prompt!r}: {label_problem(prompt)}")
    if source != "game" and (prompt is not None or recognized is not None):
        raise FeedbackError("prompt and recognized belong to game rounds (source 'game')")
    return {"source": source, "drawing_id": drawing_id, "prompt": prompt, "recognized": recognized}


def _insert_or_find(conn: Connection, row: dict[str, Any]) -> tuple[int, bool] | None:
    """Store ``row`` on ``conn`` (in its transaction): (id, False) for a new or replaced
    answer, (the id of the row with the same input and label, True) for a duplicate, None
    when that row vanished meanwhile. An IntegrityError escapes when another transaction
    stored an answer under the same drawing id first (the caller tries again);
    FeedbackConflict when the drawing id is another client's."""
    if row["drawing_id"] is not None:
        replaced = _replace_answer(conn, row)
        if replaced is not None:
            return replaced, False
    savepoint = conn.begin_nested()
    try:
        key = conn.execute(insert(Feedback).values(**row)).inserted_primary_key
        savepoint.commit()
    except IntegrityError:
        savepoint.rollback()
        found = conn.execute(
            select(Feedback.id).where(Feedback.content_hash == row["content_hash"])
        ).scalar_one_or_none()
        if found is None and row["drawing_id"] is not None:
            _check_owner(conn, row)
            raise  # the drawing id's unique index: another answer came first; retry
        return None if found is None else (int(found), True)
    if key is None:
        raise FeedbackError("the database did not give the new row's id")
    return int(key[0]), False


def _replace_answer(conn: Connection, row: dict[str, Any]) -> int | None:
    """Give the row stored under ``row``'s drawing id ``row``'s answer, in place (same
    id, back to status ``new``); its id, or None when there is no such row with another
    answer. When the new answer already exists as another row, the drawing's old row is
    deleted instead and the caller finds that row as a duplicate.

    The first statement writes, so SQLite takes the write lock before reading anything
    (a read first could not be upgraded once another writer had committed)."""
    mine = (Feedback.drawing_id == row["drawing_id"]) & Feedback.client_id.is_not_distinct_from(
        row["client_id"]
    )
    other_answer = Feedback.content_hash != row["content_hash"]
    savepoint = conn.begin_nested()
    try:
        changed = conn.execute(
            update(Feedback).where(mine, other_answer).values(**row, reviewed_at=None)
        ).rowcount
        savepoint.commit()
    except IntegrityError:  # the new answer is another row already
        savepoint.rollback()
        conn.execute(delete(Feedback).where(mine, other_answer))
        return None
    if not changed:
        return None
    return int(conn.execute(select(Feedback.id).where(mine)).scalar_one())


def _check_owner(conn: Connection, row: dict[str, Any]) -> None:
    """FeedbackConflict when ``row``'s drawing id is stored from another client."""
    owner = conn.execute(
        select(Feedback.client_id).where(Feedback.drawing_id == row["drawing_id"])
    ).first()
    if owner is not None and owner[0] != row["client_id"]:
        raise FeedbackConflict(
            f"drawing_id: {row['drawing_id']!r} was answered from another client; "
            "send a new drawing id for a new drawing"
        )


def _summary(row: Any) -> dict[str, Any]:
    return {
        "id": int(row["id"]),
        "created": _iso(row["created_at"]),
        "model": row["model"],
        "version": row["model_version"],
        "input_kind": row["input_kind"],
        "predicted": json.loads(row["predicted_json"]) if row["predicted_json"] else None,
        "label": row["label"],
        "status": row["status"],
        "client_id": row["client_id"],
        "content_hash": row["content_hash"],
        "reviewed": _iso(row["reviewed_at"]),
        "source": row["source"],
        "drawing_id": row["drawing_id"],
        "prompt": row["prompt"],
        "recognized": row["recognized"],
    }


def _batches(ids: Sequence[int]) -> Iterator[builtins.list[int]]:
    unique = sorted({int(i) for i in ids})
    for k in range(0, len(unique), ID_BATCH):
        yield unique[k : k + ID_BATCH]


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
