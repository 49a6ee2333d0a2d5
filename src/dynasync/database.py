"""Opening the application's database and the two kinds of transaction dynasync uses."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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


class TooBig(Exception):
    """A read went past its byte limit after `rows` rows of about `size` bytes: read fewer at once."""

    def __init__(self, rows: int, size: int) -> None:
        super().__init__(f"{rows} rows of about {size} bytes")
        self.rows = rows
        self.size = size

    def fewer(self, limit: int, max_bytes: int) -> int:
        """A smaller limit for the read again: as many rows as fit, going by those read (at most half)."""
        return max(1, min(limit // 2, int(0.8 * max_bytes * self.rows / max(1, self.size))))


def rows_that_fit(max_bytes: int, bytes_per_row: float, most: int) -> int:
    """How many rows of about this size one read may hold: `most` at most, at least one."""
    return max(1, min(most, int(max_bytes / bytes_per_row))) if bytes_per_row else most


@dataclass
class ByteCount:
    """How many bytes of TEXT and BLOB a read holds, against a limit: a slice of
    big rows stops growing there (TooBig) instead of holding them all."""

    limit: int
    used: int = 0  # estimated from a sample of the rows
    rows: int = 0

    def add(self, batch: list[Any]) -> None:
        """Count a batch of rows; TooBig once over the limit with more than one row read."""
        step = 4 if len(batch) >= 16 else 1  # a sample: this runs for every row of every slice
        sampled = sum(len(v) for r in batch[::step] for v in r if v.__class__ in _SIZED)
        self.used += sampled * step
        self.rows += len(batch)
        if self.used > self.limit and self.rows > 1:
            raise TooBig(self.rows, self.used)


_SIZED = (str, bytes, values.InvalidText)
# About how many bytes of row values one read holds at most (a changelog slice, a
# chunk of a copy): however big the rows, memory stays flat. At least one row is read.
READ_BYTES = 64 * 1024 * 1024
FETCH_ROWS = 16  # rows fetched at once when a read is counted: a few big rows at most past the limit


def fetch_all(
    conn: sqlite3.Connection, query: str, params: Sequence[Any] = (), count: ByteCount | None = None
) -> tuple[list[str], list[Any]]:
    """A query's column names and rows (counted against `count`, when given). TEXT
    is decoded by sqlite3 itself, which costs a third of a Python text_factory per
    row; should some TEXT not be UTF-8, the query is run again with the factory
    that keeps it (as InvalidText)."""
    conn.text_factory = str
    try:
        cur = conn.execute(query, params)
        return [d[0] for d in cur.description], _rows(cur, count)
    except sqlite3.OperationalError as e:
        if not str(e).startswith("Could not decode to UTF-8"):
            raise
    finally:
        conn.text_factory = values.text_factory
    cur = conn.execute(query, params)
    return [d[0] for d in cur.description], _rows(cur, count)


def _rows(cur: sqlite3.Cursor, count: ByteCount | None) -> list[Any]:
    if count is None:
        return cur.fetchall()
    out: list[Any] = []
    while batch := cur.fetchmany(FETCH_ROWS):
        count.add(batch)
        out.extend(batch)
    return out


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
