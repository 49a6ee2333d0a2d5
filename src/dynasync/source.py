"""Reading a source table in key order, in bounded chunks: shared by backfill
and verify."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from dynasync import triggers as sql
from dynasync.database import read_txn
from dynasync.schema import TableSchema


def key_of(schema: TableSchema, columns: Sequence[str], row: Sequence[Any]) -> tuple[Any, Any]:
    values = [row[columns.index(c)] for c in schema.key]
    return values[0], (values[1] if len(values) > 1 else None)


def chunks(
    conn: sqlite3.Connection, schema: TableSchema, size: int, after: tuple[Any, ...] | None = None
) -> Iterator[tuple[list[str], list[tuple[Any, ...]]]]:
    """Rows with a non-NULL key in key order, each chunk read in its own short
    read transaction, so memory and reader lifetime stay bounded."""
    while True:
        with read_txn(conn):
            if after is None:
                cur = conn.execute(sql.chunk_after(schema.name, schema.key, True), (size,))
            else:
                cur = conn.execute(sql.chunk_after(schema.name, schema.key, False), (*after, size))
            columns = [d[0] for d in cur.description]
            rows = cur.fetchall()
        if not rows:
            return
        yield columns, rows
        last = rows[-1]
        after = tuple(last[columns.index(c)] for c in schema.key)
        if len(rows) < size:
            return
