"""Introspect a source table: key columns, their DynamoDB key types and
collations, every column (generated ones too), and each uniqueness
constraint through which a REPLACE can delete another row without firing a
DELETE trigger.

sqlite-utils reads the columns and indexes; what it does not show (generated
columns, table kinds, index expressions and partial-index conditions) comes
from SQLite's own pragmas and the index's CREATE statement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from dynasync import ddl, sql
from dynasync.exceptions import SourceError, TableGoneError
from dynasync.sql import Conflict, Term

BUILTIN_COLLATIONS = frozenset({"BINARY", "NOCASE", "RTRIM"})
_GENERATED = {2: "GENERATED VIRTUAL", 3: "GENERATED STORED"}  # table_xinfo's `hidden`
_ROWID_NAMES = ("rowid", "_rowid_", "oid")


@dataclass(frozen=True)
class TableSchema:
    """What dynasync needs to know of a source table's definition."""

    name: str
    key: tuple[str, ...]
    key_types: tuple[str, ...]  # DynamoDB scalar types: "S", "N" or "B"
    # Each key column's collation in the primary-key index: how SQLite finds a
    # row by key. dynasync's own lookups add an exact (BINARY) match on top.
    key_collations: tuple[str, ...] = ("BINARY",)
    rowid_key: bool = False  # the key is the rowid (INTEGER PRIMARY KEY)
    conflicts: tuple[Conflict, ...] = ()
    columns: tuple[str, ...] = ()  # every column, generated ones included, in table order
    # Non-key columns with their DEFAULT text, or how they are generated: what an item looks like.
    shape: tuple[tuple[str, str | None], ...] = ()

    @property
    def trigger_spec(self) -> sql.TriggerSpec:
        """The input of the capture trigger generator."""
        return sql.TriggerSpec(self.name, self.key, self.conflicts, self.rowid_key)


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
    _check_kind(conn, name)
    # Never let sqlite-utils turn recursive_triggers on for dynasync's connection.
    table = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False).table(name)
    xinfo = conn.execute(sql.TABLE_XINFO.format(table=sql.quote_ident(name))).fetchall()
    # (cid, name, type, notnull, default, pk, hidden)
    pk = sorted((c for c in xinfo if c[5]), key=lambda c: c[5])
    _check_key(name, [c[1] for c in pk])
    key = tuple(c[1] for c in pk)
    indexes = {i.name: i for i in table.indexes}
    xindexes = {x.name: x for x in table.xindexes}
    pk_index = next((n for n, i in indexes.items() if i.origin == "pk"), None)
    key_collations = (
        tuple(c.coll for c in xindexes[pk_index].columns if c.key) if pk_index else ("BINARY",) * len(key)
    )
    for col, coll in zip(key, key_collations, strict=True):
        if coll.upper() not in BUILTIN_COLLATIONS:
            raise SourceError(
                f"table {name!r}: key column {col!r} uses the collation {coll!r}, which only the "
                "application defines; dynasync supports BINARY, NOCASE and RTRIM keys"
            )
    columns = tuple(c[1] for c in xinfo)
    generated = frozenset(c[1] for c in xinfo if c[6] in _GENERATED)
    conflicts = _conflicts(conn, key, key_collations, columns, generated, indexes, xindexes)
    definitions = ddl.column_definitions(conn.execute(sql.TABLE_SQL, (name,)).fetchone()[1] or "")
    rowid = _rowid_name(conn, name, columns)
    if rowid is not None and pk_index is not None:
        # INSERT OR REPLACE ... (rowid, ...) can delete the row holding that rowid.
        conflicts.append(Conflict("rowid", (Term(rowid, rowid, "BINARY", "rowid"),)))
    return TableSchema(
        name=name,
        key=key,
        key_types=tuple(key_type(c[2] or "") for c in pk),
        key_collations=key_collations,
        rowid_key=rowid is not None and pk_index is None,
        conflicts=tuple(conflicts),
        columns=columns,
        shape=tuple(sorted((c[1], _shape_value(c, definitions)) for c in xinfo if not c[5])),
    )


def _shape_value(column: tuple[Any, ...], definitions: dict[str, str]) -> str | None:
    """A column's DEFAULT text; for a generated column, its whole definition
    (so a column generated anew under the same name is a reshape)."""
    if column[6] not in _GENERATED:
        return column[4]  # type: ignore[no-any-return]
    return f"{_GENERATED[column[6]]}: {definitions.get(column[1].lower(), '')}"


def _check_kind(conn: sqlite3.Connection, name: str) -> None:
    """That `name` is an ordinary table."""
    row = conn.execute(sql.TABLE_SQL, (name,)).fetchone()
    if row is None:
        raise TableGoneError(f"table {name!r} does not exist in the database")
    kind, text = row
    if kind == "view":
        raise SourceError(f"{name!r} is a view; only tables can be synced")
    if text and text.lstrip().upper().startswith("CREATE VIRTUAL"):
        raise SourceError(f"table {name!r} is a virtual table; only ordinary tables can be synced")


def _rowid_name(conn: sqlite3.Connection, name: str, columns: Sequence[str]) -> str | None:
    """How to name the rowid of a rowid table (no column may shadow it); None for WITHOUT ROWID."""
    taken = {c.lower() for c in columns}
    for candidate in _ROWID_NAMES:
        if candidate in taken:
            continue
        try:
            conn.execute(sql.select_rowid(name, candidate)).fetchall()
        except sqlite3.OperationalError:
            return None  # WITHOUT ROWID: no name reaches a rowid
        return candidate
    return None


def _check_key(name: str, key: Sequence[str]) -> None:
    if not key:
        raise SourceError(
            f"table {name!r} has no declared PRIMARY KEY; dynasync needs one to key DynamoDB items"
        )
    if len(key) > 2:
        raise SourceError(
            f"table {name!r} has a {len(key)}-column primary key; DynamoDB keys have at most two "
            "attributes (partition and sort key)"
        )


def _uses(conn: sqlite3.Connection, expression: str, columns: tuple[str, ...]) -> tuple[str, ...]:
    """The columns an index expression refers to, proven by SQLite compiling it
    over those columns alone; all columns if that fails (safe, but then the
    capture trigger names them all)."""
    uses = ddl.names_used(expression, columns)
    try:
        conn.execute(sql.expression_probe(expression, uses)).fetchall()
    except sqlite3.DatabaseError:
        return columns
    return uses


def _conflicts(
    conn: sqlite3.Connection,
    key: tuple[str, ...],
    key_collations: tuple[str, ...],
    columns: tuple[str, ...],
    generated: frozenset[str],
    indexes: dict[str, Any],
    xindexes: dict[str, Any],
) -> list[Conflict]:
    """Every uniqueness constraint a REPLACE can delete another row through."""
    out: list[Conflict] = []
    for index_name, index in indexes.items():
        if not index.unique:
            continue
        cols = [c for c in xindexes[index_name].columns if c.key]
        if index.origin == "pk":
            if all(c.coll.upper() == "BINARY" for c in cols):
                continue  # rows equal under BINARY have the same key: no other row to delete
            pk_terms = tuple(Term(sql.quote_ident(c.name), c.name, c.coll) for c in cols)
            out.append(Conflict("PRIMARY KEY", pk_terms))
            continue
        same_key = dict(zip(key, key_collations, strict=True))
        if all(any(c.name == k and c.coll == coll for c in cols) for k, coll in same_key.items()):
            continue  # it contains the key: only the row itself can conflict
        text = conn.execute(sql.INDEX_SQL, (index_name,)).fetchone()
        exprs, where = ddl.index_parts(text[0]) if text and text[0] else ([], None)
        terms: list[Term] = []
        for i, c in enumerate(cols):
            if c.cid >= 0:
                kind = "generated" if c.name in generated else "column"
                terms.append(Term(sql.quote_ident(c.name), c.name, c.coll, kind))
            else:
                terms.append(Term(exprs[i], None, c.coll, "expression", _uses(conn, exprs[i], columns)))
        where = where if index.partial else None
        out.append(Conflict(index_name, tuple(terms), where, _uses(conn, where, columns) if where else ()))
    return out


def reshaped(old: Sequence[Sequence[Any]], new: Sequence[Sequence[Any]]) -> bool:
    """Whether existing rows now map to different items although no trigger
    fired: a column dropped or renamed, one added with a non-NULL default or
    generated, or a generated column defined anew."""
    before = {name: default for name, default in old}
    after = {name: default for name, default in new}
    if any(name not in after for name in before):
        return True
    if any(after[name] is not None for name in after if name not in before):
        return True
    return any(
        before[name] != after[name] and str(after[name] or before[name]).startswith("GENERATED")
        for name in after
        if name in before
    )
