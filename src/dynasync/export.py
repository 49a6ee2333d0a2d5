"""`dynasync dead-letters --export`: every dead letter with its row as it is now,
as JSON Lines, in a file only its owner can read or in an S3 object.

Each line is one JSON object: `database`, `table`, `key` (column to value, in
primary-key order), `reason`, `kind`, `attempts`, `first_failed` and
`last_failed` (epoch seconds), and `row` (column to value; null when the row is
gone). SQLite values keep their exact form (`encode`).

The lines go to a temporary file (mode 0600) as they are read, a chunk of dead
letters and their rows at a time, each chunk in one read transaction. The file
is then renamed over the destination, in the same directory, so a crash never
leaves half an export there; or, for `s3://`, uploaded as one object. The
databases of a fleet are added to one export in turn, and a database whose
part fails adds nothing.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynasync import schema, sql, state
from dynasync.app import App
from dynasync.database import read_txn
from dynasync.exceptions import ExportError, SourceError, UsageError
from dynasync.retry import RequestStats

# Dead letters (with their rows) read per read transaction, and so held at once:
# few, since a row can be big (an item over 400 KB is a common dead letter).
CHUNK = 100
CONTENT_TYPE = "application/jsonl"
S3_SCHEME = "s3://"
_DEAD_FIELDS = 8  # rowid, k1, k2, reason, kind, attempts, first_failed, last_failed (sql._DEAD_EXPORTED)


@dataclass(frozen=True)
class Destination:
    """Where an export goes: a local file (`path`), or an S3 object (`bucket`, `key`)."""

    path: Path | None = None
    bucket: str = ""
    key: str = ""

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else f"{S3_SCHEME}{self.bucket}/{self.key}"


def destination(text: str, now: float | None = None) -> Destination:
    """`PATH`, or `s3://bucket/prefix`: a prefix that is empty or ends with '/'
    gets `dead-letters-<UTC time>.jsonl` after it; any other is the object's key."""
    if not text.startswith(S3_SCHEME):
        if not text:
            raise UsageError("--export needs a file path or s3://bucket/prefix")
        return Destination(path=Path(text))
    bucket, _, key = text[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise UsageError(f"--export {text}: no bucket named (write s3://bucket/prefix)")
    if not key or key.endswith("/"):
        key += f"dead-letters-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}.jsonl"
    return Destination(bucket=bucket, key=key)


def encode(value: object) -> Any:
    """One SQLite value as JSON: TEXT a string, INTEGER a number (exact over 64
    bits), REAL a number (its shortest round-trip form; infinities and NaN as the
    strings "Infinity", "-Infinity", "NaN"), BLOB and TEXT that is not UTF-8
    (values.InvalidText) {"base64": ...}, NULL null."""
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    return value


class Export:
    """One export under way: lines streamed to a temporary file (0600), then
    renamed over the destination or uploaded. close() always, finish() on success."""

    def __init__(self, dest: Destination, chunk: int = CHUNK) -> None:
        self.dest = dest
        self.chunk = chunk
        self.count = 0
        where = dest.path.parent if dest.path is not None else None
        if dest.path is not None and dest.path.is_dir():
            raise UsageError(f"--export {dest.path}: is a directory; name a file")
        try:
            fd, name = tempfile.mkstemp(prefix=f".{dest.path.name}." if dest.path else "dynasync-export-",
                                        suffix=".tmp", dir=where)
        except OSError as e:
            where_text = where or tempfile.gettempdir()
            raise ExportError(f"creating the export file in {where_text}: {e.strerror}") from e
        os.fchmod(fd, 0o600)  # mkstemp asks for 0600, less the umask: exactly 0600 whatever the umask
        self._temp = Path(name)
        self._file = os.fdopen(fd, "wb")

    @property
    def destination(self) -> str:
        """The file or s3:// URL the export goes to."""
        return str(self.dest)

    def add(self, app: App, table: str | None = None) -> int:
        """Append the dead letters of the app's database (or of one table); how
        many. If that fails, its lines are taken back: only whole databases stay."""
        start = self._file.tell()
        added = 0
        try:
            for line in lines(app, table, self.chunk):
                self._file.write(line)
                added += 1
        except BaseException:
            self._file.seek(start)
            self._file.truncate()
            raise
        self.count += added
        return added

    def finish(self, app: App) -> None:
        """Put the export in place: rename the file over the destination, or
        upload it through app.objects, checked by its SHA-256."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self.dest.path is None:
            upload = functools.partial(app.objects.put_file, self.dest.bucket, self.dest.key, self._temp,
                                       _sha256(self._temp), CONTENT_TYPE)
            app.retrier().call(upload, f"uploading the export to {self.dest}", RequestStats())
            return
        try:
            os.replace(self._temp, self.dest.path)
            _sync_directory(self.dest.path.parent)
        except OSError as e:
            raise ExportError(f"moving the export into place at {self.dest.path}: {e.strerror}") from e

    def close(self) -> None:
        """Remove the temporary file, if it is still there."""
        if not self._file.closed:
            self._file.close()
        self._temp.unlink(missing_ok=True)


def lines(app: App, table: str | None = None, chunk: int = CHUNK) -> Iterator[bytes]:
    """Each dead letter of the app's database (or of one configured table) as a
    JSON line, with its row as it is now, a chunk at a time."""
    state.require_installed(app.conn)
    if table:
        app.config.table(table)
    names = [table] if table else [t for (t,) in app.conn.execute(sql.DEAD_TABLES)]
    database = str(app.config.database)
    for name in names:
        for doc in _dead_letters(app.conn, name, chunk):
            text = json.dumps({"database": database, **doc}, ensure_ascii=False, allow_nan=False)
            yield (text + "\n").encode()


def _dead_letters(conn: sqlite3.Connection, table: str, chunk: int) -> Iterator[dict[str, Any]]:
    """One table's dead letters in the order they were stored, each with its row."""
    try:
        found = schema.inspect(conn, table)
        key: tuple[str, ...] | None = found.key
        query = sql.dead_letters_with_rows(table, found.key, found.key_collations)
    except SourceError:  # the table is gone: no rows, and no names for the key columns
        key, query = None, sql.DEAD_CHUNK
    after = 0
    while True:
        with read_txn(conn):
            cur = conn.execute(query, (table, after, chunk))
            columns = [d[0] for d in cur.description][_DEAD_FIELDS + 1 :]
            rows = cur.fetchall()
        for r in rows:
            if r[0] == after:  # a NULL-keyed dead letter that met several rows: the first is its row
                continue
            after = r[0]
            yield _document(table, key, columns, r)
        if len(rows) < chunk:
            return


def _document(
    table: str, key: tuple[str, ...] | None, columns: list[str], r: tuple[Any, ...]
) -> dict[str, Any]:
    """One dead letter's line (but the database): its key by column name, and its row."""
    _, k1, k2, reason, kind, attempts, first_failed, last_failed = r[:_DEAD_FIELDS]
    names = key or ("k1", "k2")[: 1 if k2 is None else 2]
    row = None
    if len(r) > _DEAD_FIELDS and r[_DEAD_FIELDS] is not None:  # the join's marker: the row exists
        row = {c: encode(v) for c, v in zip(columns, r[_DEAD_FIELDS + 1 :], strict=True)}
    return {
        "table": table,
        "key": {n: encode(v) for n, v in zip(names, (k1, k2), strict=False)},
        "reason": reason,
        "kind": kind,
        "attempts": attempts,
        "first_failed": first_failed,
        "last_failed": last_failed,
        "row": row,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sync_directory(directory: Path) -> None:
    """fsync a directory, so a rename in it survives a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
