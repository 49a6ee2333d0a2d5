"""Introspect a source table with sqlite-utils: key columns, their DynamoDB key
types, and the UNIQUE indexes REPLACE can delete rows through."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from dynasync import sql
from dynasync.exceptions import SourceError


@dataclass(frozen=True)
class TableSchema:
    """What dynasync needs to know of a source table's definition."""

    name: str
    key: tuple[str, ...]
    key_types: tuple[str, ...]  # DynamoDB scalar types: "S", "N" or "B"
    unique_indexes: tuple[tuple[str, ...], ...]
    skipped_indexes: tuple[str, ...]  # expression indexes the triggers cannot follow
    # Non-key columns with their DEFAULT text: what an item looks like.
    shape: tuple[tuple[str, str | None], ...] = ()

    @property
    def trigger_spec(self) -> sql.TriggerSpec:
        """The input of the capture trigger generator."""
        return sql.TriggerSpec(self.name, self.key, self.unique_indexes)


def affinity(declared: str) -> str:
    """SQLite's column affinity rules (section 3.1 of the datatype docs), in order."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "REAL"
    return "NUMERIC"


def key_type(declared: str) -> str:
    """The DynamoDB key type ("S", "N" or "B") for a column's declared type."""
    return {"INTEGER": "N", "REAL": "N", "NUMERIC": "N", "BLOB": "B"}.get(affinity(declared), "S")


def inspect(conn: sqlite3.Connection, name: str) -> TableSchema:
    """Introspect one source table; SourceError says why it cannot be synced."""
    row = conn.execute(sql.TABLE_SQL, (name,)).fetchone()
    if row is None:
        raise SourceError(f"table {name!r} does not exist in the database")
    kind, ddl = row
    if kind == "view":
        raise SourceError(f"{name!r} is a view; only tables can be synced")
    if ddl and ddl.lstrip().upper().startswith("CREATE VIRTUAL"):
        raise SourceError(f"table {name!r} is a virtual table; only ordinary tables can be synced")
    table = sqlite_utils.Database(conn).table(name)
    columns = table.columns
    pk = sorted((c for c in columns if c.is_pk), key=lambda c: c.is_pk)
    if not pk:
        raise SourceError(
            f"table {name!r} has no declared PRIMARY KEY; dynasync needs one to key DynamoDB items"
        )
    if len(pk) > 2:
        raise SourceError(
            f"table {name!r} has a {len(pk)}-column primary key; DynamoDB keys have at most two "
            "attributes (partition and sort key)"
        )
    key = tuple(c.name for c in pk)
    unique: list[tuple[str, ...]] = []
    skipped: list[str] = []
    for index in table.indexes:
        if not index.unique or index.origin == "pk":
            continue
        cols = tuple(index.columns)
        if any(c is None for c in cols):
            skipped.append(index.name)
            continue
        if set(cols) >= set(key):
            continue  # a superset of the key can only conflict with the row itself
        unique.append(cols)
    return TableSchema(
        name=name,
        key=key,
        key_types=tuple(key_type(c.type or "") for c in pk),
        unique_indexes=tuple(unique),
        skipped_indexes=tuple(skipped),
        shape=tuple(sorted((c.name, c.default_value) for c in columns if not c.is_pk)),
    )


def reshaped(old: Sequence[Sequence[Any]], new: Sequence[Sequence[Any]]) -> bool:
    """Whether existing rows now map to different items although no trigger
    fired: a column dropped or renamed, or one added with a non-NULL default."""
    before = {name: default for name, default in old}
    after = {name: default for name, default in new}
    if any(name not in after for name in before):
        return True
    return any(after[name] is not None for name in after if name not in before)
