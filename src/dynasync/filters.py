"""Row filters (`where = "..."`): checked when the config is loaded, applied
in SQL, and evaluated row by row when a row's values make them fail.

A filter must depend on its row alone, or a row could start or stop matching
with no change the triggers see: it is refused unless SQLite accepts it as a
partial index's condition (no subqueries, parameters or non-deterministic
functions such as `date('now')`), reading only the table's columns.

A filter that compiles can still fail on one row's values (`json_extract` of
malformed JSON, an integer overflow). A read that fails that way is done
again without the filter, and the filter tested on each row: a row it fails
on becomes a dead letter saying so, and the rest sync as usual.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dynasync import ddl, sql
from dynasync.database import ByteCount, fetch_all
from dynasync.exceptions import MappingError
from dynasync.schema import TableSchema

# Errors of evaluating an expression on some values; busy, I/O and corruption
# errors fail the unfiltered read too, and propagate from there.
FILTER_ERRORS = (sqlite3.OperationalError, sqlite3.DataError)


@dataclass(frozen=True)
class RowFilter:
    """A table's row filter, and how to test it on one row."""

    table: str
    where: str
    key: tuple[str, ...]
    collations: tuple[str, ...]

    def verdict(self, conn: sqlite3.Connection, key: Sequence[Any]) -> bool | str:
        """Whether the row with this key matches; why not, when the filter fails on it."""
        query = sql.filter_by_key(self.table, self.key, self.collations, self.where)
        try:
            found = conn.execute(query, tuple(key)).fetchone()
        except FILTER_ERRORS as e:
            return f"the row filter fails on this row: {e}"
        return bool(found and found[0])


@dataclass
class Rows:
    """The result of a read, and whether the filter was applied to it."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    filtered: bool  # False: read without the filter, which the caller tests per row


def fetch(
    conn: sqlite3.Connection,
    build: Callable[[str | None], str],
    params: Sequence[Any],
    row_filter: RowFilter | None,
    count: ByteCount | None = None,
) -> Rows:
    """Run the query `build(where)` builds, or, when the filter fails on some
    row, the one `build(None)` builds (rows counted against `count`)."""
    where = row_filter.where if row_filter is not None else None
    used = count.used if count is not None else 0
    try:
        return Rows(*fetch_all(conn, build(where), params, count), True)
    except FILTER_ERRORS:
        if where is None:
            raise
    if count is not None:
        count.used = used  # the failed read's rows are gone
    return Rows(*fetch_all(conn, build(None), params, count), False)


def check_filter(conn: sqlite3.Connection, table: TableSchema, where: str) -> None:
    """Refuse a filter that is not one expression over this table's columns
    alone, deterministic, with no subquery (MappingError says why)."""
    depth = 0
    for t in ddl.tokens(where):
        depth += {"(": 1, ")": -1}.get(t.text, 0)
        if depth < 0 or t.text == ";" or t.kind == "comment":
            message = f"{where!r} is not a single SQL expression (no ';' or comments)"
            raise MappingError(table.name, "where", message)
        if t.kind == "symbol" and t.text in "?:@$":
            message = f"{where!r} has a parameter: a filter must depend on the row alone"
            raise MappingError(table.name, "where", message)
    if depth:
        raise MappingError(table.name, "where", f"{where!r} has unbalanced parentheses")
    _compile(conn, table.name, where)
    _as_index_condition(conn, table, where)


def _compile(conn: sqlite3.Connection, table: str, where: str) -> None:
    """SQLite's authorizer refuses anything but this table's columns while the filter compiles."""

    def authorize(action: int, arg1: str | None, *_: str | None) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ and (arg1 or "").lower() == table.lower():
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    conn.set_authorizer(authorize)
    try:
        conn.execute(sql.filter_probe(table, where)).fetchall()
    except sqlite3.DatabaseError as e:
        message = f"{where!r} is not an expression over the table's columns: {e}"
        raise MappingError(table, "where", message) from None
    finally:
        conn.set_authorizer(None)


def _as_index_condition(conn: sqlite3.Connection, table: TableSchema, where: str) -> None:
    """SQLite checks a partial index's condition for exactly what a filter
    must be: so index an empty TEMP copy of the table (on this connection
    only) with it, and store a row of NULLs to catch `date('now')`."""
    try:
        for statement in sql.filter_index_probe(table.name, table.key[0], where):
            conn.execute(statement)
    except sqlite3.DatabaseError as e:
        message = f"{where!r} must depend on the row alone (no subquery, parameter or 'now'): {e}"
        raise MappingError(table.name, "where", message) from None
    finally:
        conn.execute(sql.filter_index_probe_drop(table.name))
