"""Opening the feedback database: URLs, engines and schema migrations.

SQLite is the default (one file, ``work/feedback.sqlite3`` unless told otherwise) and
runs in WAL mode, so readers never wait for the writer, with a busy timeout, so
writers from several server processes queue instead of failing, and foreign keys on.
Any other SQLAlchemy URL (``postgresql+psycopg://user:pw@host/db``) works too: nothing
here is specific to a dialect except the locks taken while migrating.

Durability: a submission is acknowledged only after its transaction has committed, and
SQLite runs with ``synchronous = FULL``: in WAL mode that fsyncs the log at every commit,
so an acknowledged row survives a power cut or an OS crash, not only a crash of the
process (``NORMAL`` would survive the latter only). Feedback arrives at the pace of
people clicking; the fsync (about a millisecond on an SSD) is not worth saving.

A file deleted or replaced while the database is open goes unnoticed by SQLite: the open
connections keep writing to the old, unlinked file, and new ones create an empty file at
the path. ``FileWatch`` notices (the path's device and inode are no longer those of the
file that was opened) so the store can refuse instead of acknowledging lost rows.

Every transaction is short. On SQLite, pysqlite's own transaction handling is turned
off and ``BEGIN`` is emitted by us: ``BEGIN IMMEDIATE`` for the migration (it takes the
write lock at once, so two processes opening a new database run the migrations one
after the other), a plain ``BEGIN`` otherwise.
"""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from imgclass.errors import FeedbackError

log = logging.getLogger(__name__)
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its per-step chatter; we log once

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_MS = 30_000
PG_LOCK_KEY = 0x696D67636C617373  # "imgclass": the advisory lock held while migrating
BEGIN_OPTION = "imgclass_sqlite_begin"  # execution option: "IMMEDIATE" for the write lock
SYNCHRONOUS = "FULL"  # fsync the WAL at every commit: acknowledged rows survive power loss


def to_url(value: str | Path) -> URL:
    """A SQLAlchemy URL from a URL or a plain path (a path means an SQLite file)."""
    if isinstance(value, Path) or "://" not in value:
        path = Path(value).expanduser().resolve()
        return URL.create("sqlite", database=str(path))
    try:
        return make_url(value)
    except ArgumentError as exc:
        raise FeedbackError(f"{value!r} is not a database URL ({exc})") from None


def describe(url: URL) -> str:
    """The URL as safe to print: any password hidden."""
    return url.render_as_string(hide_password=True)


def make_engine(url: URL) -> Engine:
    """An engine for ``url``, tuned for short transactions from many threads."""
    try:
        if url.get_backend_name() == "sqlite":
            return _sqlite_engine(url)
        return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=16)
    except (NoSuchModuleError, ModuleNotFoundError, ArgumentError) as exc:
        raise FeedbackError(
            f"unknown database {describe(url)}: {exc} (use sqlite:///FILE, a file path, or "
            "an installed driver such as postgresql+psycopg://...)"
        ) from None


def _sqlite_engine(url: URL) -> Engine:
    if not url.database or url.database == ":memory:":
        raise FeedbackError("the feedback store needs an SQLite file, not an in-memory database")
    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        pool_size=8,
        max_overflow=24,
        pool_timeout=60,
    )
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _sqlite_begin)
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _switch_to_wal(cursor)
    cursor.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")  # see the module's docstring
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode = WAL``, waiting for other connections like any write.

    Switching a database that is still in rollback-journal mode (a new file that another
    process is creating tables in) takes the write lock while holding a read lock, and
    SQLite answers SQLITE_BUSY at once there instead of calling the busy handler, so
    the wait is ours: retried with growing pauses up to the busy timeout.
    """
    import sqlite3

    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause * (0.5 + random.random()))
        pause = min(pause * 2, 0.2)


def _busy(exc: BaseException) -> bool:
    message = str(exc).lower()
    return "database is locked" in message or "database is busy" in message


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(BEGIN_OPTION, "")
    conn.exec_driver_sql(f"BEGIN {mode}".strip())


def sqlite_path(url: URL) -> Path | None:
    """The database file of an SQLite URL (None for any other database)."""
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    return Path(url.database)


class FileWatch:
    """Tells whether the SQLite file at ``path`` is still the file that was opened.

    Taken when the store is opened (after the migrations created the file); each
    ``problem()`` is one ``stat`` of the path, compared by device and inode.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity = _identity(os.stat(path))

    def problem(self) -> str | None:
        """Why the file at the path is not the opened database any more, or None."""
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return "its file was deleted while in use"
        except OSError as exc:
            return f"its file cannot be checked ({exc.strerror})"
        if _identity(found) != self.identity:
            return "its file was replaced by another file while in use"
        return None


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def alembic_config(connection: Connection | None = None, url: URL | None = None) -> Any:
    """Alembic's configuration built in code: our migrations folder, no alembic.ini."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option(
            "sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%")
        )
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration's revision id."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise FeedbackError(f"no migrations found in {MIGRATIONS}")
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at (None for a database without our schema)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` under a lock that other processes respect.

    A database already at head costs one read and no lock, so opening the store from
    many workers stays cheap. A database made by the first feedback store (a
    ``feedback`` table and no migration history) is converted in the same transaction.
    """
    try:
        with engine.connect() as conn:
            if revision == "head" and current_revision(conn) == head_revision():
                return
        with _locked(engine) as conn:
            from alembic import command

            from imgclass.feedback.legacy import adopt_legacy_table

            before = current_revision(conn)
            legacy = adopt_legacy_table(conn)
            command.upgrade(alembic_config(conn), revision)
            if legacy is not None:
                legacy.copy_rows(conn)
            after = current_revision(conn)
        if after != before:
            log.info("feedback database %s: schema %s -> %s", describe(engine.url), before, after)
    except OperationalError as exc:
        raise FeedbackError(
            f"cannot open the feedback database {describe(engine.url)}: {exc.orig}"
        ) from None
    except Exception as exc:
        from alembic.util.exc import CommandError

        if not isinstance(exc, CommandError):
            raise
        raise FeedbackError(
            f"the feedback database {describe(engine.url)} has a schema this imgclass does not "
            f"know ({exc}); it was made by a newer imgclass"
        ) from None


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Undo migrations down to ``revision`` (``base``: drop everything)."""
    from alembic import command

    with _locked(engine) as conn:
        command.downgrade(alembic_config(conn), revision)


class _locked:
    """A connection inside a transaction that holds the migration lock; commits on a
    clean exit, rolls back on an exception."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __enter__(self) -> Connection:
        conn = self.engine.connect()
        if self.engine.dialect.name == "sqlite":
            conn = conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        self.conn = conn
        self.tx = conn.begin()
        if self.engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
        return conn

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            if exc_type is None:
                self.tx.commit()
            else:
                self.tx.rollback()
        finally:
            self.conn.close()


def has_table(conn: Connection, name: str) -> bool:
    return bool(inspect(conn).has_table(name))
