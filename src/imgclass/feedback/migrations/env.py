"""Alembic's environment for the feedback database.

``imgclass.feedback.db.upgrade`` hands over an open connection, already inside a
transaction that holds the migration lock (``BEGIN IMMEDIATE`` on SQLite, an advisory
lock on PostgreSQL), in ``config.attributes["connection"]``; the migrations run in that
transaction, so two server workers opening a new database at once cannot both create
the table, and a failed migration leaves nothing behind. Without a connection (the
``alembic`` command line pointed at this folder) the URL comes from the config.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from imgclass.feedback.schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(str(config.get_main_option("sqlalchemy.url")))
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
