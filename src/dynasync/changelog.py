"""Read one bounded slice of the changelog together with the current state of
every row it names, in a single read transaction, collapsed to one entry per
key. The writes built from it therefore match the changelog position exactly,
however often the application touched a key."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dynasync import triggers as sql
from dynasync.database import read_txn
from dynasync.schema import TableSchema


@dataclass
class KeyChange:
    k1: Any
    k2: Any
    row: tuple[Any, ...] | None  # the row now, None when it is gone


@dataclass
class Batch:
    low: int  # exclusive
    high: int  # inclusive: the mark after this batch is applied
    entries: int  # changelog rows covered
    changes: dict[str, list[KeyChange]] = field(default_factory=dict)
    columns: dict[str, list[str]] = field(default_factory=dict)
    ops: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def keys(self) -> int:
        return sum(len(v) for v in self.changes.values())


def pending(conn: sqlite3.Connection, hwm: int) -> int:
    return int(conn.execute(sql.CHANGELOG_PENDING, (hwm,)).fetchone()[0])


def oldest_pending(conn: sqlite3.Connection, hwm: int) -> tuple[int | None, int]:
    """(seq of the oldest change after the mark or None, how many there are)."""
    oldest, count = conn.execute(sql.CHANGELOG_OLDEST_PENDING, (hwm,)).fetchone()
    return oldest, int(count)


def last_seq(conn: sqlite3.Connection) -> int:
    return int(conn.execute(sql.CHANGELOG_MAX).fetchone()[0] or 0)


def read_batch(
    conn: sqlite3.Connection, schemas: Mapping[str, TableSchema], hwm: int, limit: int
) -> Batch | None:
    """The next slice after `hwm`, at most `limit` changelog rows; None when
    nothing is pending. Rows of tables not in `schemas` are skipped."""
    with read_txn(conn):
        high, entries = conn.execute(sql.CHANGELOG_SLICE_END, (hwm, limit)).fetchone()
        if not entries:
            return None
        batch = Batch(low=hwm, high=high, entries=entries)
        for table, op, n in conn.execute(sql.CHANGELOG_SLICE_OPS, (hwm, high)).fetchall():
            batch.ops[(table, op)] += n
        for table in sorted({t for t, _ in batch.ops}):
            schema = schemas.get(table)
            if schema is None:
                continue
            cur = conn.execute(sql.slice_rows(table, schema.key), (hwm, high, table))
            names = [d[0] for d in cur.description][2:]
            key_pos = [names.index(c) for c in schema.key]
            changes = []
            for r in cur.fetchall():
                row: tuple[Any, ...] | None = tuple(r[2:])
                if r[0] is None or (len(schema.key) == 2 and r[1] is None):
                    # NULL never joins: fetch a NULL-keyed row directly, so it
                    # becomes a dead letter while it exists and clears once gone.
                    found = conn.execute(sql.null_key_rows(table, schema.key, first=True)).fetchone()
                    row = tuple(found) if found is not None else None
                elif any(r[2 + i] is None for i in key_pos):
                    row = None
                changes.append(KeyChange(r[0], r[1], row))
            batch.changes[table] = changes
            batch.columns[table] = names
    return batch
