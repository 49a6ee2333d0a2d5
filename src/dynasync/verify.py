"""Compare each source table with its DynamoDB table and optionally repair.

Two sweeps, both with flat memory: SQLite rows in key order, fetched from
DynamoDB 100 keys at a time (missing and different items); then a scan of
DynamoDB, each item's key looked up in SQLite (extra items).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dynasync import mapping, state
from dynasync import triggers as sql
from dynasync.app import App
from dynasync.database import read_txn, write_txn
from dynasync.mapping import Item, Poison
from dynasync.source import chunks, key_of
from dynasync.tablemap import TableMap
from dynasync.target import MAX_BATCH_GET, Ref, delete, put
from dynasync.writer import Write, WriteStats

EXAMPLES = 5
Progress = Callable[[str, int], None]


@dataclass
class TableReport:
    table: str
    target: str
    rows: int = 0
    items: int = 0
    missing: int = 0
    different: int = 0
    extra: int = 0
    unsyncable: int = 0  # rows DynamoDB can never hold (dead letters)
    repaired: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return self.missing + self.different + self.extra + self.unsyncable

    def note(self, text: str) -> None:
        if len(self.examples) < EXAMPLES:
            self.examples.append(text)


@dataclass
class VerifyResult:
    tables: list[TableReport] = field(default_factory=list)
    repair: bool = False

    @property
    def differences(self) -> int:
        return sum(t.differences for t in self.tables)

    @property
    def remaining(self) -> int:
        if not self.repair:
            return self.differences
        return sum(t.differences - t.repaired for t in self.tables)

    @property
    def in_sync(self) -> bool:
        return self.remaining == 0


def verify(
    app: App, tables: Sequence[str] | None = None, repair: bool = False, progress: Progress | None = None
) -> VerifyResult:
    if repair:
        app.lock()
    names = list(tables) if tables else [t.source for t in app.config.tables]
    for n in names:
        app.config.table(n)
    schemas = app.schemas()
    app.check_targets(schemas)
    maps = app.table_maps(schemas)
    result = VerifyResult(repair=repair)
    for name in names:
        result.tables.append(_verify_table(app, maps[name], repair, progress))
    return result


def _fetch(app: App, target: str, keys: list[Item], stats: WriteStats) -> dict[tuple[Any, ...], Item]:
    found: dict[tuple[Any, ...], Item] = {}
    retrier = app.retrier()
    pending = keys
    started, attempt = time.monotonic(), 0
    while pending:
        items, pending = retrier.call(
            functools.partial(app.target.batch_get, target, pending), f"reading {target!r}", stats
        )
        for it in items:
            found[mapping.key_identity({k: it[k] for k in keys[0]})] = it
        if pending:
            retrier.wait(attempt, started, f"reading {target!r}", stats, "UnprocessedKeys")
            attempt += 1
    return found


def _verify_table(app: App, tmap: TableMap, repair: bool, progress: Progress | None) -> TableReport:
    schema = tmap.schema
    conn, name = app.conn, schema.name
    target = app.config.table(name).target
    report = TableReport(name, target)
    writer = app.writer()
    stats = WriteStats()

    def fix(writes: list[Write], rejected: list[tuple[Ref, str]]) -> None:
        if not repair:
            return
        out = writer.write(target, writes) if writes else None
        bad = out.rejected if out else []
        rejected = rejected + [(w.ref, reason) for w, reason in bad]
        with write_txn(conn):
            state.record_dead_letters(conn, rejected, None)
        report.repaired += len(writes) - len(bad)

    for columns, rows in chunks(conn, schema, MAX_BATCH_GET):
        app.heartbeat()
        expected: list[tuple[Ref, Item]] = []
        rejected: list[tuple[Ref, str]] = []
        for row in rows:
            ref: Ref = (name, *key_of(schema, columns, row))
            try:
                expected.append((ref, tmap.item(columns, row)))
            except Poison as e:
                report.unsyncable += 1
                report.note(f"{name} key {ref[1:]!r}: cannot be stored: {e}")
                rejected.append((ref, str(e)))
        report.rows += len(rows)
        keys = [tmap.key_of(it) for _, it in expected]
        found = _fetch(app, target, keys, stats) if keys else {}
        writes: list[Write] = []
        for (ref, want), key in zip(expected, keys, strict=True):
            have = found.get(mapping.key_identity(key))
            if have is None:
                report.missing += 1
                report.note(f"{name} key {ref[1:]!r}: missing in {target}")
            elif not mapping.same_item(want, have):
                report.different += 1
                report.note(f"{name} key {ref[1:]!r}: differs in {target}")
            else:
                continue
            writes.append(Write(ref, put(want)))
        fix(writes, rejected)
        if progress:
            progress(name, report.rows)

    exists = sql.row_exists(name, schema.key)
    start: Item | None = None
    while True:
        page, start = app.retrier().call(
            functools.partial(app.target.scan, target, start), f"scanning {target!r}", stats
        )
        app.heartbeat()
        extras: list[Write] = []
        with read_txn(conn):
            for it in page:
                report.items += 1
                if not all(k in it for k in tmap.key_names) or not tmap.owns(it):
                    continue  # written for another table sharing this target
                key = tmap.key_of(it)
                values = tmap.sqlite_key(key)
                if values is None:
                    continue
                if conn.execute(exists, values).fetchone() is None:
                    report.extra += 1
                    report.note(f"{name}: {target} has extra item {values!r}")
                    extra: Ref = (name, values[0], values[1] if len(values) > 1 else None)
                    extras.append(Write(extra, delete(key)))
        fix(extras, [])
        if start is None:
            return report
