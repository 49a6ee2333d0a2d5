"""Opening the application's database and the two kinds of transaction dynasync uses."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dynasync import values
from dynasync.exceptions import SourceError

# dynasync waits this long for the application's write lock. Its own write
# transactions last milliseconds, so the application's 5 s default is never hit.
BUSY_TIMEOUT_MS = 30_000


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """Open an existing database read-write (or read-only). A missing file is an
    error: SQLite would otherwise create an empty database and dynasync would sync nothing."""
    if not path.exists():
        raise SourceError(f"database file {path} does not exist")
    if not path.is_file():
        raise SourceError(f"database path {path} is not a file")
    try:
        conn = sqlite3.connect(
            f"file:{quote(str(path.resolve()))}?mode={'ro' if readonly else 'rw'}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.text_factory = values.text_factory
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as e:
        raise SourceError(f"cannot open database {path}: {e}") from None
    return conn


def fetch_all(
    conn: sqlite3.Connection, query: str, params: Sequence[Any] = ()
) -> tuple[list[str], list[Any]]:
    """A query's column names and rows. TEXT is decoded by sqlite3 itself, which
    costs a third of a Python text_factory per row; should some TEXT not be
    UTF-8, the query is run again with the factory that keeps it (as InvalidText)."""
    conn.text_factory = str
    try:
        cur = conn.execute(query, params)
        return [d[0] for d in cur.description], cur.fetchall()
    except sqlite3.OperationalError as e:
        if not str(e).startswith("Could not decode to UTF-8"):
            raise
    finally:
        conn.text_factory = values.text_factory
    cur = conn.execute(query, params)
    return [d[0] for d in cur.description], cur.fetchall()


def writable_now(conn: sqlite3.Connection) -> bool:
    """Whether dynasync could take the write lock this instant: False while the
    application holds it. Never waits (a daemon skips a busy database this round
    rather than hold up the others for the busy timeout)."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            return False
        raise
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


@contextmanager
def read_txn(conn: sqlite3.Connection) -> Iterator[None]:
    """A snapshot: every query inside sees the same committed state. Keep it
    short: an open reader stops WAL checkpoints from reaching the end."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


@contextmanager
def write_txn(conn: sqlite3.Connection) -> Iterator[None]:
    """A short BEGIN IMMEDIATE transaction, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
