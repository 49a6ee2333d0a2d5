"""Read one bounded slice of the changelog together with the current state of
every row it names, in a single read transaction, collapsed to one entry per
key. The writes built from it therefore match the changelog position exactly,
however often the application touched a key."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from dynasync import filters, sql
from dynasync.database import ByteCount, TooBig, read_txn
from dynasync.filters import RowFilter
from dynasync.schema import TableSchema
from dynasync.writes import RowRef


class KeyChange(NamedTuple):
    """A key the slice names, with its row as it is now (None when it is gone or
    no longer matches the filter) and the item key it last wrote (tracked tables)."""

    ref: RowRef
    row: tuple[Any, ...] | None
    old: tuple[str, ...] = ()
    refused: str | None = None  # why the row filter fails on this row: a dead letter


@dataclass(frozen=True)
class TableRead:
    """What reading one table's rows for a slice needs."""

    schema: TableSchema
    filter: RowFilter | None = None
    target: str | None = None  # tracked tables: the target whose recorded items to read


@dataclass
class Slice:
    """A run of changelog rows after the mark, as one entry per changed key."""

    high: int  # the last seq covered: the mark once this slice is applied
    entries: int  # changelog rows covered
    changes: dict[str, list[KeyChange]] = field(default_factory=dict)  # by table
    columns: dict[str, list[str]] = field(default_factory=dict)  # the row columns, by table
    bytes: int = 0  # about how many bytes of TEXT and BLOB its rows hold

    @property
    def keys(self) -> int:
        """How many distinct keys the slice names."""
        return sum(len(v) for v in self.changes.values())


def pending(conn: sqlite3.Connection, hwm: int) -> int:
    """Changelog rows after the mark."""
    return int(conn.execute(sql.CHANGELOG_PENDING, (hwm,)).fetchone()[0])


def oldest_pending(conn: sqlite3.Connection, hwm: int) -> tuple[int | None, int]:
    """(seq of the oldest change after the mark or None, how many there are)."""
    oldest, count = conn.execute(sql.CHANGELOG_OLDEST_PENDING, (hwm,)).fetchone()
    return oldest, int(count)


def last_seq(conn: sqlite3.Connection) -> int:
    """The newest seq in the changelog (0 when empty)."""
    return int(conn.execute(sql.CHANGELOG_MAX).fetchone()[0] or 0)


def read_slice(
    conn: sqlite3.Connection,
    tables: Mapping[str, TableRead],
    hwm: int,
    limit: int,
    max_bytes: int | None = None,
) -> Slice | None:
    """The next slice after `hwm`, at most `limit` changelog rows, and rows of
    about `max_bytes` at most (fewer changelog rows then, but at least one);
    None when nothing is pending. Rows of tables not in `tables` are skipped."""
    while True:
        count = ByteCount(max_bytes) if max_bytes is not None else None
        try:
            return _read(conn, tables, hwm, limit, count)
        except TooBig as e:
            # Rows so big that the slice would hold too many: as many as fit, going by those read.
            limit = e.fewer(limit, max_bytes or 0)


def _read(
    conn: sqlite3.Connection, tables: Mapping[str, TableRead], hwm: int, limit: int, count: ByteCount | None
) -> Slice | None:
    with read_txn(conn):
        high, entries = conn.execute(sql.CHANGELOG_SLICE_END, (hwm, limit)).fetchone()
        if not entries:
            return None
        result = Slice(high=high, entries=entries)
        names = sorted(t for (t,) in conn.execute(sql.CHANGELOG_SLICE_TABLES, (hwm, high)))
        for name in names:
            read = tables.get(name)
            if read is not None:
                _read_table(conn, name, read, hwm, high, result, count)
    result.bytes = count.used if count is not None else 0
    return result


def _read_table(
    conn: sqlite3.Connection, table: str, read: TableRead, hwm: int, high: int, out: Slice,
    count: ByteCount | None = None,
) -> None:
    key = read.schema.key
    build = functools.partial(sql.slice_rows, table, key, read.schema.key_collations)
    rows = filters.fetch(conn, build, (hwm, high, table), read.filter, count)
    names = rows.columns[2:]
    first = 2 + names.index(key[0])  # a row that is gone (or filtered out) reads as NULLs
    two = len(key) == 2
    test = read.filter if not rows.filtered else None
    changes = []
    for r in rows.rows:
        ref = RowRef(table, r[0], r[1])
        row: tuple[Any, ...] | None = r[2:]
        refused: str | None = None
        if r[0] is None or (two and r[1] is None):
            # NULL never joins: fetch the row with exactly this NULL-holding key
            # through the key's index, so it becomes a dead letter while it
            # exists and clears once gone, whatever other NULL-keyed rows exist.
            row = _null_keyed(conn, table, read, ref.values(len(key)))
        elif r[first] is None:
            row = None
        elif test is not None:
            row, refused = _tested(conn, test, ref, r[2:])
        old = ()
        if read.target is not None:
            old = tuple(item for (item,) in conn.execute(sql.KEYS_OF_ROW, (*ref, read.target)))
        changes.append(KeyChange(ref, row, old, refused))
    out.changes[table] = changes
    out.columns[table] = names


def _null_keyed(
    conn: sqlite3.Connection, table: str, read: TableRead, key: tuple[Any, ...]
) -> tuple[Any, ...] | None:
    """The row whose key is exactly `key`, which holds a NULL (matching the filter), or None."""
    nulls = tuple(v is None for v in key)
    build = functools.partial(sql.null_key_row, table, read.schema.key, read.schema.key_collations, nulls)
    used = max((i + 1 for i, v in enumerate(key) if v is not None), default=0)  # the last ?N in the query
    found = filters.fetch(conn, build, key[:used], read.filter).rows
    return tuple(found[0]) if found else None


def _tested(
    conn: sqlite3.Connection, row_filter: RowFilter, ref: RowRef, row: tuple[Any, ...]
) -> tuple[tuple[Any, ...] | None, str | None]:
    """A row read without its filter, tested alone: kept, gone (filtered out), or refused with the reason."""
    verdict = row_filter.verdict(conn, ref.values(len(row_filter.key)))
    if verdict is True:
        return row, None
    if verdict is False:
        return None, None
    return row, verdict
