"""Compare each source table with its DynamoDB table and optionally repair.

Two sweeps, both with flat memory: SQLite rows in key order, fetched from
DynamoDB 100 keys at a time (missing and different items); then a scan of
DynamoDB, each item's key looked up in SQLite (extra items).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dynasync import state
from dynasync.app import App
from dynasync.database import read_txn, write_txn
from dynasync.progress import Progress
from dynasync.retry import RequestStats
from dynasync.tables import SyncedTable
from dynasync.target import MAX_BATCH_GET, delete
from dynasync.values import Item, key_identity, same_item
from dynasync.writes import Rejected, Write

EXAMPLES = 5


@dataclass
class TableReport:
    """What verify found for one table, with a few examples."""

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
        """Everything found out of line."""
        return self.missing + self.different + self.extra + self.unsyncable

    def note(self, text: str) -> None:
        """Keep an example, up to EXAMPLES of them."""
        if len(self.examples) < EXAMPLES:
            self.examples.append(text)


@dataclass
class VerifyResult:
    """Every table's report."""

    tables: list[TableReport] = field(default_factory=list)
    repair: bool = False

    @property
    def differences(self) -> int:
        """Differences found, repaired or not."""
        return sum(t.differences for t in self.tables)

    @property
    def remaining(self) -> int:
        """Differences left after any repair."""
        if not self.repair:
            return self.differences
        return sum(t.differences - t.repaired for t in self.tables)

    @property
    def in_sync(self) -> bool:
        """Whether nothing remains out of line."""
        return self.remaining == 0


def verify(
    app: App, tables: Sequence[str] | None = None, repair: bool = False, progress: Progress | None = None
) -> VerifyResult:
    """`dynasync verify`: compare the configured (or named) tables; --repair fixes what differs."""
    if repair:
        app.lock()
    return verify_tables(app, list(app.tables(tables).values()), repair, progress)


def verify_tables(
    app: App, tables: Sequence[SyncedTable], repair: bool, progress: Progress | None = None
) -> VerifyResult:
    """Compare these tables with DynamoDB, repairing when asked."""
    result = VerifyResult(repair=repair)
    for t in tables:
        result.tables.append(_TableCheck(app, t, repair, progress).run())
    return result


class _TableCheck:
    """One table's two sweeps."""

    def __init__(self, app: App, table: SyncedTable, repair: bool, progress: Progress | None) -> None:
        self.app, self.table, self.repair, self.progress = app, table, repair, progress
        self.report = TableReport(table.name, table.target)
        self.stats = RequestStats()
        self.writer = app.writer() if repair else None

    def run(self) -> TableReport:
        """Both sweeps; the report."""
        self._rows()
        self._items()
        return self.report

    def _rows(self) -> None:
        """Every row's item must be in DynamoDB as the row maps it."""
        t, report, conn = self.table, self.report, self.app.conn
        total = t.count(conn) if self.progress else None
        for chunk in t.chunks(conn, MAX_BATCH_GET):
            self.app.heartbeat()
            expected, rejected = t.puts(chunk)
            for r in rejected:
                report.unsyncable += 1
                report.note(f"{t.name} key {r.ref.key!r}: cannot be stored: {r.reason}")
            report.rows += len(chunk.rows)
            found = self._fetch([w.key for w in expected]) if expected else {}
            writes: list[Write] = []
            for w in expected:
                have = found.get(key_identity(w.key))
                if have is None:
                    report.missing += 1
                    report.note(f"{t.name} key {w.ref.key!r}: missing in {t.target}")
                elif not same_item(w.request["PutRequest"]["Item"], have):
                    report.different += 1
                    report.note(f"{t.name} key {w.ref.key!r}: differs in {t.target}")
                else:
                    continue
                writes.append(w)
            self._fix(writes, rejected)
            if self.progress:
                self.progress(t.name, report.rows, total)

    def _items(self) -> None:
        """Every item of this table in DynamoDB must have its row in SQLite."""
        t, report, conn = self.table, self.report, self.app.conn
        start: Item | None = None
        while True:
            page, start = self.app.retrier().call(
                functools.partial(self.app.target.scan, t.target, start), f"scanning {t.target!r}", self.stats
            )
            self.app.heartbeat()
            extras: list[Write] = []
            with read_txn(conn):
                for it in page:
                    report.items += 1
                    if not t.owns(it):
                        continue  # written for another table sharing this target
                    key = t.items.key_of(it)
                    ref = t.ref_of_key(key)
                    if ref is None or t.row_for_key(conn, key) is not None:
                        continue
                    report.extra += 1
                    values = list(ref.values(len(t.schema.key)))
                    report.note(f"{t.name}: {t.target} has extra item {values!r}")
                    extras.append(Write(ref, delete(key), key))
            self._fix(extras, [])
            if start is None:
                return

    def _fetch(self, keys: list[Item]) -> dict[tuple[Any, ...], Item]:
        """The items DynamoDB holds for these keys, by key identity."""
        target, names = self.table.target, list(keys[0])
        items = self.app.retrier().drain(
            functools.partial(self.app.target.batch_get, target),
            keys,
            f"reading {target!r}",
            self.stats,
            "UnprocessedKeys",
        )
        return {key_identity({k: it[k] for k in names}): it for it in items}

    def _fix(self, writes: list[Write], rejected: list[Rejected]) -> None:
        if self.writer is None:
            return
        out = self.writer.write(self.table.target, writes) if writes else None
        bad = out.rejected if out else []
        with write_txn(self.app.conn):
            state.record_dead_letters(self.app.conn, rejected + bad, None)
        self.report.repaired += len(writes) - len(bad)
