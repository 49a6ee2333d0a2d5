"""One object per synced table: the one place that knows how a source table
becomes DynamoDB writes.

A SyncedTable owns its config entry, its schema, its item mapping and its
target table. It turns a row as it is now, or a row that is gone, into a Write
or a dead letter (Rejected), reads its rows in key order, and maps a DynamoDB
key back to the row that produced it. Sync, backfill, verify and dead-letter
retry all go through it.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dynasync import items, schema, sql
from dynasync.config import Config, TableConfig
from dynasync.database import read_txn
from dynasync.exceptions import KeySchemaError, Poison, TableMissingError
from dynasync.logs import fields
from dynasync.retry import RequestStats, Retrier
from dynasync.target import KeySchema, Target, delete, put
from dynasync.values import Item, key_identity
from dynasync.writes import Rejected, RowRef, Write

log = logging.getLogger(__name__)


@dataclass
class Chunk:
    """Rows of one table read together, with their column names and references."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    refs: list[RowRef]


class SyncedTable:
    """A configured source table, its schema, its mapping and its DynamoDB target."""

    def __init__(self, config: TableConfig, table_schema: schema.TableSchema) -> None:
        self.config = config
        self.schema = table_schema
        self.items = items.build(config, table_schema)

    @property
    def name(self) -> str:
        """The SQLite table."""
        return self.config.source

    @property
    def target(self) -> str:
        """The DynamoDB table."""
        return self.config.target

    def ref(self, columns: Sequence[str], row: Sequence[Any]) -> RowRef:
        """The reference of a row read with these columns."""
        return RowRef.of(self.name, [row[columns.index(c)] for c in self.schema.key])

    def write(
        self, ref: RowRef, columns: Sequence[str], row: Sequence[Any] | None
    ) -> Write | Rejected | None:
        """What brings DynamoDB in line with the row as it is now: a Put, a
        Delete when the row is gone, a dead letter, or None when the row is gone
        and its key could never have been written."""
        if row is None:
            return self.delete(ref)
        return self.put(ref, columns, row)

    def put(self, ref: RowRef, columns: Sequence[str], row: Sequence[Any]) -> Write | Rejected:
        """The Put of a row's whole item, or a dead letter saying why it cannot be stored."""
        try:
            item = self.items.item(columns, row)
        except Poison as e:
            return Rejected(ref, str(e))
        except Exception as e:  # nothing a row holds may stop the daemon
            log.warning("a row could not be mapped", exc_info=True, extra=fields(table=self.name))
            return Rejected(ref, f"cannot be mapped: {type(e).__name__}: {e}")
        return Write(ref, put(item), self.items.key_of(item))

    def delete(self, ref: RowRef) -> Write | None:
        """The Delete of a gone row's item; None when its key cannot exist in DynamoDB."""
        try:
            key = self.items.key(ref.key)
        except Exception:  # Poison or worse: no item can have this key
            return None
        return Write(ref, delete(key), key)

    def puts(self, chunk: Chunk) -> tuple[list[Write], list[Rejected]]:
        """The Puts of a chunk of rows, and the rows that become dead letters."""
        writes: list[Write] = []
        rejected: list[Rejected] = []
        for ref, row in zip(chunk.refs, chunk.rows, strict=True):
            w = self.put(ref, chunk.columns, row)
            if isinstance(w, Write):
                writes.append(w)
            else:
                rejected.append(w)
        return writes, rejected

    def chunks(self, conn: sqlite3.Connection, size: int, after: RowRef | None = None) -> Iterator[Chunk]:
        """Rows with a non-NULL key in key order, each chunk read in its own short
        read transaction, so memory and reader lifetime stay bounded."""
        key, colls = self.schema.key, self.schema.key_collations
        first = sql.chunk_after(self.name, key, colls, True)
        rest = sql.chunk_after(self.name, key, colls, False)
        while True:
            with read_txn(conn):
                if after is None:
                    cur = conn.execute(first, (size,))
                else:
                    cur = conn.execute(rest, (*after.values(len(key)), size))
                columns = [d[0] for d in cur.description]
                rows = cur.fetchall()
            if not rows:
                return
            chunk = Chunk(columns, rows, [self.ref(columns, r) for r in rows])
            yield chunk
            after = chunk.refs[-1]
            if len(rows) < size:
                return

    def null_keyed(self, conn: sqlite3.Connection) -> list[Rejected]:
        """Rows with a NULL key column, which can never become items, as dead letters."""
        with read_txn(conn):
            cur = conn.execute(sql.null_key_rows(self.name, self.schema.key))
            columns = [d[0] for d in cur.description]
            return [Rejected(self.ref(columns, r), "a key column is NULL") for r in cur]

    def count(self, conn: sqlite3.Connection) -> int:
        """How many rows the table has."""
        return int(conn.execute(sql.count_rows(self.name)).fetchone()[0])

    def owns(self, item: Item) -> bool:
        """Whether an item in the target could have been written for this table."""
        return all(k in item for k in self.items.key_names) and self.items.constants_match(item)

    def row_for_key(self, conn: sqlite3.Connection, key: Item) -> RowRef | None:
        """The current row that produces exactly this DynamoDB key, if there is one.

        Exact as DynamoDB compares keys: a row whose key differs only in case
        under a NOCASE key, or in trailing spaces under RTRIM, does not count.
        """
        want = key_identity(key)
        s = self.schema
        query = sql.rows_by_key(self.name, s.key, s.key_collations)
        for values in self.items.key_candidates(key):
            for found in conn.execute(query, values):
                try:
                    if key_identity(self.items.key(found)) == want:
                        return RowRef.of(self.name, found)
                except Exception:  # Poison or worse: that row has no item
                    continue
        return None

    def ref_of_key(self, key: Item) -> RowRef | None:
        """A reference for an item's key (the first row it could have come from), for dead letters."""
        candidates = self.items.key_candidates(key)
        return RowRef.of(self.name, candidates[0]) if candidates else None


def inspect(
    conn: sqlite3.Connection, config: Config, names: Sequence[str] | None = None
) -> dict[str, schema.TableSchema]:
    """The schemas of the configured tables (all, or the named ones), by name."""
    entries = [config.table(n) for n in names] if names else list(config.tables)
    return {t.source: schema.inspect(conn, t.source) for t in entries}


def build(config: Config, schemas: Mapping[str, schema.TableSchema]) -> dict[str, SyncedTable]:
    """The synced tables for these schemas: their mapping options checked against them."""
    return {name: SyncedTable(config.table(name), s) for name, s in schemas.items()}


def load(
    conn: sqlite3.Connection, config: Config, names: Sequence[str] | None = None
) -> dict[str, SyncedTable]:
    """The configured tables (all, or the named ones), inspected and mapped, by name."""
    return build(config, inspect(conn, config, names))


def sources(found: Mapping[str, SyncedTable]) -> dict[str, list[str]]:
    """The source tables of each target table."""
    out: dict[str, list[str]] = {}
    for name, t in found.items():
        out.setdefault(t.target, []).append(name)
    return out


@dataclass
class TargetCheck:
    """What checking the target tables found."""

    created: list[str] = field(default_factory=list)
    identities: dict[str, str] = field(default_factory=dict)  # target table -> TableInfo.identity


def ensure_targets(
    tables: Iterable[SyncedTable], target: Target, retrier: Retrier, create: bool = False
) -> TargetCheck:
    """Each target table must exist with the key schema its source table
    implies; with `create`, missing ones are created."""
    check = TargetCheck()
    stats = RequestStats()
    for t in tables:
        if t.target in check.identities:
            continue
        want = t.items.key_schema
        describe = functools.partial(target.describe, t.target)
        info = retrier.call(describe, f"describing {t.target!r}", stats)
        if info is None:
            if not create:
                raise TableMissingError(
                    f"DynamoDB table {t.target!r} (target of {t.name!r}) does not exist: create it, "
                    "or set create_tables = true",
                    t.target,
                )
            log.info("creating DynamoDB table", extra=fields(table=t.target))
            create_it = functools.partial(target.create_table, t.target, want)
            retrier.call(create_it, f"creating {t.target!r}", stats)
            info = retrier.call(describe, f"describing {t.target!r}", stats)
            if info is None:
                raise TableMissingError(f"DynamoDB table {t.target!r} vanished after CreateTable", t.target)
            check.created.append(t.target)
        if tuple(info.key_schema) != want:
            raise KeySchemaError(
                f"DynamoDB table {t.target!r} has key schema {_fmt(info.key_schema)}, but SQLite table "
                f"{t.name!r} needs {_fmt(want)}"
            )
        check.identities[t.target] = info.identity
    return check


def _fmt(key: KeySchema) -> str:
    return "(" + ", ".join(f"{n} {t}" for n, t in key) + ")"
