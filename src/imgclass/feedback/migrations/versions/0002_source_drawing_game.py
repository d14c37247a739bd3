"""Where a submission came from, one answer per drawing, and the game's rounds.

Adds ``source`` ('page', 'api' or 'game'; rows made before it say 'api': which of the
page and other clients sent them was not recorded), ``drawing_id`` (unique when given:
a second answer for a drawing replaces the first), and for game rounds ``prompt`` and
``recognized``. SQLite cannot add a CHECK constraint to a table, so the batch operation
rebuilds the table there (in the migration's transaction); PostgreSQL alters it in place.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(
            sa.Column("source", sa.String(length=8), nullable=False, server_default="api")
        )
        batch.add_column(sa.Column("drawing_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("prompt", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("recognized", sa.Boolean(), nullable=True))
        batch.create_check_constraint("source", "source IN ('page', 'api', 'game')")
        batch.create_index(op.f("ix_feedback_source"), ["source"], unique=False)
        batch.create_unique_constraint(op.f("uq_feedback_drawing_id"), ["drawing_id"])


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_constraint(op.f("uq_feedback_drawing_id"), type_="unique")
        batch.drop_index(op.f("ix_feedback_source"))
        batch.drop_constraint(op.f("ck_feedback_source"), type_="check")
        batch.drop_column("recognized")
        batch.drop_column("prompt")
        batch.drop_column("drawing_id")
        batch.drop_column("source")
