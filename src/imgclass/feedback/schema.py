"""The feedback table as SQLAlchemy 2.0 typed ORM models.

The schema itself is created and changed only by the Alembic migrations in
``migrations/versions/`` (``FeedbackStore`` runs ``upgrade head`` when it opens a
database); these models describe the result for queries and must match the latest
migration (``tests/feedback/test_migrations.py`` checks that they do).

Times are stored as naive UTC datetimes (SQLite has no time zones; PostgreSQL gets
``timestamp without time zone``) and given out as ISO 8601 strings ending in ``Z``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STATUSES = ("new", "accepted", "rejected")
INPUT_KINDS = ("strokes", "image")
# Where a submission came from: the page's Draw/Upload tabs, a plain API client, or a
# round of the page's game (labelled with the prompted word, recognised or not).
SOURCES = ("page", "api", "game")
DRAWING_ID_MAX = 64  # characters in a client's drawing id
LABEL_MAX = 100  # characters in a label (new labels taught by users: at most 64)
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints alike
    on every database."""

    metadata = MetaData(naming_convention=NAMING)


class Feedback(Base):
    """One person's label for one input: a confirmation of the model's guess or a
    correction. ``content_hash`` (sha256 of the normalised input and the label) is
    unique: the same input with the same label is stored once.

    ``drawing_id`` (the client's id for one drawing, unique when given) makes one drawing
    one answer: a second submission for it replaces the first. ``source`` says where the
    submission came from (``SOURCES``); game rounds also keep the ``prompt`` and whether
    the model ``recognized`` the drawing in time (its guesses are in ``predicted_json``,
    the strokes with their times in ``strokes_json``)."""

    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint("status IN ('new', 'accepted', 'rejected')", name="status"),
        CheckConstraint("input_kind IN ('strokes', 'image')", name="input_kind"),
        CheckConstraint("source IN ('page', 'api', 'game')", name="source"),
        Index("ix_feedback_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(), nullable=False)
    model: Mapped[str | None] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(100))
    input_kind: Mapped[str] = mapped_column(String(16), nullable=False)
    strokes_json: Mapped[str | None] = mapped_column(Text)
    image: Mapped[bytes | None] = mapped_column(LargeBinary)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True, index=True)
    predicted_json: Mapped[str | None] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(LABEL_MAX), nullable=False, index=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="new", index=True)
    client_id: Mapped[str | None] = mapped_column(String(100))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime())
    source: Mapped[str] = mapped_column(
        String(8), nullable=False, default="api", server_default="api", index=True
    )
    drawing_id: Mapped[str | None] = mapped_column(String(DRAWING_ID_MAX), unique=True)
    prompt: Mapped[str | None] = mapped_column(String(LABEL_MAX))
    recognized: Mapped[bool | None] = mapped_column(Boolean())
