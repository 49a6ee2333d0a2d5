"""One object per synced table: the one place that knows how a source table
becomes DynamoDB writes.

A SyncedTable owns its config entry, its schema, its item mapping, its row
filter and its target table. It turns a row as it is now, or a row that is
gone (or no longer matches the filter), into a change for dynasync.owners to
plan: a Put, a Delete, or a dead letter (Rejected). It reads its rows in key
order, and finds the row that produces a DynamoDB key. Sync, backfill,
verify and dead-letter retry all go through it.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dynasync import filters, items, oversize, schema, sql
from dynasync.changelog import TableRead
from dynasync.config import Config, S3Config
from dynasync.database import READ_BYTES, ByteCount, TooBig, connect, read_txn, rows_that_fit
from dynasync.exceptions import DynasyncError, MappingError, Oversized, Poison, SourceError
from dynasync.logs import fields
from dynasync.tableconfig import TableConfig
from dynasync.values import Item, key_text
from dynasync.writes import Change, DeadLetterKind, Rejected, RowRef, Write

log = logging.getLogger(__name__)


@dataclass
class Chunk:
    """Rows of one table read together, with their column names and references."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    refs: list[RowRef]
    last: RowRef  # the last row read, matching or not: where the next chunk starts
    refused: list[Rejected] = field(default_factory=list)  # rows the filter fails on


class SyncedTable:
    """A configured source table, its schema, its mapping and its DynamoDB target."""

    def __init__(
        self, config: TableConfig, table_schema: schema.TableSchema, tracked: bool = False,
        s3: S3Config | None = None,
    ) -> None:
        self.config = config
        self.schema = table_schema
        self.items = items.build(config, table_schema)
        self.location = oversize.Location(s3.bucket, s3.prefix) if s3 is not None and s3.bucket else None
        self.oversize = oversize.Policy(
            config.oversize, self.items.fixed, self.items.key_names, config.target,
            self.location if config.oversize == "s3" else None,
        )
        # Whether dynasync.owners records the key each row wrote: needed when the
        # key is more than the primary key, or when rows of several tables (or
        # TEXT and BLOB twins of one key) could claim one item.
        self.tracked = tracked or bool(self.items.templates) or "B" in table_schema.key_types
        self.filter = None
        if config.where is not None:
            s = table_schema
            self.filter = filters.RowFilter(s.name, config.where, s.key, s.key_collations)
        self._columns: Sequence[str] | None = None
        self._mapper: Callable[[Sequence[Any]], Item] = lambda row: {}

    @property
    def name(self) -> str:
        """The SQLite table."""
        return self.config.source

    @property
    def target(self) -> str:
        """The DynamoDB table."""
        return self.config.target

    @property
    def where(self) -> str | None:
        """The row filter: only rows matching it are synced."""
        return self.config.where

    @property
    def mapping(self) -> dict[str, Any]:
        """The mapping as the state keeps it: when it changes, the items are
        reconciled, and the old mapping's items recognised by `ownership`."""
        c = self.config
        options: dict[str, Any] = {
            "columns": c.columns,
            "exclude_columns": c.exclude_columns,
            "rename": c.rename,
            "json_columns": c.json_columns,
            "keys": [[t.name, t.template] for t in (c.partition_key, c.sort_key) if t is not None],
            "attributes": [[t.name, t.template] for t in c.attributes],
            "where": c.where,
            "constants": c.constants,
            "ttl_column": c.ttl_column,
        }
        if c.oversize != "dead-letter":  # absent otherwise: a mapping saved before the option is the same
            options["oversize"] = c.oversize
        if c.oversize == "s3" and self.location is not None:
            options["s3"] = [self.location.bucket, self.location.prefix]
        # JSON round trip, so it compares equal to what the state gives back.
        ownership = self.items.ownership.to_json()
        doc = {"target": c.target, "options": options, "ownership": ownership, "tracked": self.tracked}
        out: dict[str, Any] = json.loads(json.dumps(doc))
        return out

    @property
    def read(self) -> TableRead:
        """What a changelog slice needs to read this table's rows."""
        return TableRead(self.schema, self.filter, self.target if self.tracked else None)

    def ref(self, columns: Sequence[str], row: Sequence[Any]) -> RowRef:
        """The reference of a row read with these columns."""
        return RowRef.of(self.name, [row[columns.index(c)] for c in self.schema.key])

    def change(
        self,
        ref: RowRef,
        columns: Sequence[str],
        row: Sequence[Any] | None,
        old: tuple[str, ...] = (),
        refused: str | None = None,
    ) -> Change:
        """What the row as it is now asks of DynamoDB, given the items it may have
        written (`old`, recorded for tracked tables): a Put, or a dead letter (as
        when the filter fails on it: `refused`); for a gone row, the Delete of
        its item, which the plan takes from `old` when the key is more than the primary key."""
        if refused is not None:
            return Change(ref, Rejected(ref, refused, kind=DeadLetterKind.FILTER), old)
        if row is not None and None in ref.values(len(self.schema.key)):
            # Never an item, whatever a key template renders: rows with NULLs in their key
            # cannot be told apart by dynasync's records (as backfill and verify treat them).
            return Change(ref, Rejected(ref, "a key column is NULL", kind=DeadLetterKind.NULL_KEY), old)
        if row is not None:
            return Change(ref, self.put(ref, columns, row), old)
        if old or (self.tracked and not self.items.key_from_primary_key):
            return Change(ref, None, old)
        return Change(ref, self.delete(ref), old)

    def put(self, ref: RowRef, columns: Sequence[str], row: Sequence[Any]) -> Write | Rejected:
        """The Put of a row's whole item, or a dead letter saying why it cannot be stored."""
        if columns is not self._columns:  # once per slice or chunk, not per row
            self._columns, self._mapper = columns, self.items.mapper(columns)
        upload = None
        try:
            item = self._mapper(row)
        except Oversized as e:
            try:
                fitted = self.oversize.fit(e.item, e.size)
            except Poison as still:
                return Rejected(ref, str(still))
            item, upload = fitted.item, fitted.upload
        except Poison as e:
            return Rejected(ref, str(e))
        except Exception as e:  # nothing a row holds may stop the daemon
            log.warning("a row could not be mapped", exc_info=True, extra=fields(table=self.name))
            return Rejected(ref, f"cannot be mapped: {type(e).__name__}: {e}")
        return Write.put(ref, item, self.items.key_names, upload)

    def delete(self, ref: RowRef) -> Write | None:
        """The Delete of a gone row's item by its primary key; None when no item can have that key."""
        try:
            key = self.items.key(ref.key)
        except Exception:  # Poison or worse: no item can have this key
            return None
        return Write.delete(ref, key)

    def chunks(self, conn: sqlite3.Connection, size: int, after: RowRef | None = None) -> Iterator[Chunk]:
        """Rows with a non-NULL key (matching the filter) in key order, each chunk
        read in its own short read transaction, so memory and reader lifetime stay
        bounded: at most `size` rows, and fewer when they hold over READ_BYTES."""
        key, colls = self.schema.key, self.schema.key_collations
        limit = size
        while True:
            params = (limit,) if after is None else (*after.values(len(key)), limit)
            count = ByteCount(READ_BYTES)
            try:
                with read_txn(conn):
                    build = functools.partial(sql.chunk_after, self.name, key, colls, after is None)
                    read = filters.fetch(conn, build, params, self.filter, count)
                    chunk = self._chunk(conn, read) if read.rows else None
            except TooBig as e:  # big rows: as many as fit, going by those read
                limit = e.fewer(limit, READ_BYTES)
                continue
            if chunk is None:
                return
            if chunk.rows or chunk.refused:
                yield chunk
            after = chunk.last
            if len(read.rows) < limit:
                return
            limit = rows_that_fit(READ_BYTES, count.used / len(read.rows), size)

    def _chunk(self, conn: sqlite3.Connection, read: filters.Rows) -> Chunk:
        """A chunk of the rows read, tested against the filter when the read could not apply it."""
        refs = self._refs(read.columns, read.rows)
        if read.filtered or self.filter is None:
            return Chunk(read.columns, read.rows, refs, refs[-1])
        chunk = Chunk(read.columns, [], [], refs[-1])
        for ref, row in zip(refs, read.rows, strict=True):
            verdict = self._verdict(conn, ref, read)
            if verdict is True:
                chunk.rows.append(row)
                chunk.refs.append(ref)
            elif verdict is not False:
                chunk.refused.append(Rejected(ref, verdict, kind=DeadLetterKind.FILTER))
        return chunk

    def _refs(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[RowRef]:
        """The references of rows read with these columns (the key's places found once)."""
        name, places = self.name, [columns.index(c) for c in self.schema.key]
        if len(places) == 1:
            (a,) = places
            return [RowRef(name, r[a]) for r in rows]
        a, b = places
        return [RowRef(name, r[a], r[b]) for r in rows]

    def _verdict(self, conn: sqlite3.Connection, ref: RowRef, read: filters.Rows) -> bool | str:
        """Whether a row read matches the filter (True when the read applied it)."""
        if read.filtered or self.filter is None:
            return True
        return self.filter.verdict(conn, ref.values(len(self.schema.key)))

    def puts(self, chunk: Chunk) -> list[Write | Rejected]:
        """Each row of a chunk as its Put, or a dead letter."""
        return [self.put(ref, chunk.columns, row) for ref, row in zip(chunk.refs, chunk.rows, strict=True)]

    def chunk_changes(self, conn: sqlite3.Connection, chunk: Chunk) -> list[Change]:
        """What each row of a chunk asks of DynamoDB, given the items recorded for it."""
        old = self.old_keys(conn, chunk.refs + [r.ref for r in chunk.refused])
        rows = zip(chunk.refs, chunk.rows, strict=True)
        changes = [self.change(ref, chunk.columns, row, old.get(ref, ())) for ref, row in rows]
        return changes + [Change(r.ref, r, old.get(r.ref, ())) for r in chunk.refused]

    def null_keyed(self, conn: sqlite3.Connection) -> list[Rejected]:
        """Rows with a NULL key column (matching the filter, or all of them when
        it fails on one): dead letters, never items."""
        with read_txn(conn):
            build = functools.partial(sql.null_key_rows, self.name, self.schema.key)
            read = filters.fetch(conn, build, (), self.filter)
        null = DeadLetterKind.NULL_KEY
        return [Rejected(self.ref(read.columns, r), "a key column is NULL", kind=null) for r in read.rows]

    def count(self, conn: sqlite3.Connection) -> int:
        """How many rows the table has (that match the filter, or all of them when it fails on one)."""
        read = filters.fetch(conn, functools.partial(sql.count_rows, self.name), (), self.filter)
        return int(read.rows[0][0])

    def old_keys(self, conn: sqlite3.Connection, refs: Sequence[RowRef]) -> dict[RowRef, tuple[str, ...]]:
        """The recorded item keys of each of these rows (tracked tables)."""
        if not self.tracked:
            return {}
        return {ref: keys for ref in refs if (keys := recorded_keys(conn, ref, self.target))}

    def current_key_text(self, conn: sqlite3.Connection, ref: RowRef) -> str | None:
        """The key of the item the row produces now (key_text), or None when it
        is gone, filtered out, or cannot be stored."""
        s = self.schema
        build = functools.partial(sql.rows_by_key, self.name, s.key, s.key_collations, "*")
        read = filters.fetch(conn, build, ref.values(len(s.key)), self.filter)
        for row in read.rows:
            if self._verdict(conn, ref, read) is not True:
                continue
            w = self.put(ref, read.columns, row)
            if isinstance(w, Write):
                return w.key_text
        return None

    def could_own(self, item: Item) -> bool:
        """Whether an item in the target could have been written for this table."""
        return self.items.could_own(item)

    def row_for_key(self, conn: sqlite3.Connection, key: Item) -> RowRef | None:
        """The current row that produces exactly this DynamoDB key, for a table
        whose key attributes are its key columns (untracked tables).

        Exact as DynamoDB compares keys: a row whose key differs only in case
        under a NOCASE key, or in trailing spaces under RTRIM, does not count.
        """
        want = key_text(key)
        s = self.schema
        build = functools.partial(sql.rows_by_key, self.name, s.key, s.key_collations, None)
        for values in self.items.key_candidates(key):
            read = filters.fetch(conn, build, values, self.filter)
            for found in read.rows:
                try:
                    if key_text(self.items.key(found)) != want:
                        continue
                except Exception:  # Poison or worse: that row has no item
                    continue
                ref = RowRef.of(self.name, found)
                if self._verdict(conn, ref, read) is True:
                    return ref
        return None

    def ref_of_key(self, key: Item) -> RowRef:
        """A reference for an item's key (the first row it could have come from), for dead letters."""
        candidates = self.items.key_candidates(key)
        return RowRef.of(self.name, candidates[0]) if candidates else RowRef(self.name, key_text(key))


def recorded_keys(conn: sqlite3.Connection, ref: RowRef, target: str) -> tuple[str, ...]:
    """Every item key of this target recorded for a row (dynasync.owners)."""
    return tuple(item for (item,) in conn.execute(sql.KEYS_OF_ROW, (*ref, target)))


def inspect(
    conn: sqlite3.Connection, config: Config, names: Sequence[str] | None = None
) -> dict[str, schema.TableSchema]:
    """The schemas of the configured tables (all, or the named ones), by name;
    each row filter is checked against its table."""
    entries = [config.table(n) for n in names] if names else list(config.tables)
    found = {}
    for t in entries:
        found[t.source] = schema.inspect(conn, t.source)
        if t.where:
            filters.check_filter(conn, found[t.source], t.where)
    return found


def build(config: Config, schemas: Mapping[str, schema.TableSchema]) -> dict[str, SyncedTable]:
    """The synced tables for these schemas: their mapping options checked against them."""
    per_target: dict[str, int] = {}
    for t in config.tables:
        per_target[t.target] = per_target.get(t.target, 0) + 1
    return {
        name: SyncedTable(config.table(name), found, tracked=per_target[config.table(name).target] > 1,
                          s3=config.s3)
        for name, found in schemas.items()
    }


def load(
    conn: sqlite3.Connection, config: Config, names: Sequence[str] | None = None
) -> dict[str, SyncedTable]:
    """The configured tables (all, or the named ones), inspected and mapped, by name."""
    return build(config, inspect(conn, config, names))


def check_mappings(config: Config) -> list[tuple[str, str | None, str]]:
    """Every mapping problem of the config against the database's tables, as
    ([tables N] section, key, message): what `dynasync config check` adds when
    the database exists, so nothing passes it and then fails in `init`."""
    out: list[tuple[str, str | None, str]] = []
    conn = connect(config.database, readonly=True)
    try:
        for entry in config.tables:
            out.extend((entry.section, *problem) for problem in _entry_problems(conn, config, entry))
    finally:
        conn.close()
    return out


def _entry_problems(
    conn: sqlite3.Connection, config: Config, entry: TableConfig
) -> list[tuple[str | None, str]]:
    """Every problem of one [[tables]] entry against its table, as (key, message)."""
    try:
        table_schema = schema.inspect(conn, entry.source)
    except SourceError as e:
        return [("source", str(e))]
    found = [(p.option or None, p.detail) for p in items.problems(entry, table_schema)]
    if entry.where:
        try:
            filters.check_filter(conn, table_schema, entry.where)
        except MappingError as e:
            found.append((e.option or None, e.detail))
    if not found:
        try:  # whatever else init would fail on
            build(config, {entry.source: table_schema})
        except MappingError as e:
            found.append((e.option or None, e.detail))
        except (DynasyncError, Poison) as e:
            found.append((None, str(e)))
    return found
