"""Compare each source table with its DynamoDB table and optionally repair.

Two sweeps, both with flat memory: SQLite rows in key order, fetched from
DynamoDB 100 keys at a time (missing and different items); then a scan of
DynamoDB, each item's key looked up in SQLite (extra items).
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dynasync import objects, oversize, owners, sql, state
from dynasync.app import App
from dynasync.database import read_txn, write_txn
from dynasync.exceptions import TargetUnavailableError
from dynasync.progress import Progress
from dynasync.retry import RequestStats
from dynasync.tables import Chunk, SyncedTable
from dynasync.target import MAX_BATCH_GET
from dynasync.values import Item, key_text
from dynasync.writer import WriteResult
from dynasync.writes import Rejected, RowRef, Write

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
    orphans: int = 0  # S3 objects under the table's prefix that no item points to
    repaired: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def differences(self) -> int:
        """Everything found out of line."""
        return self.missing + self.different + self.extra + self.unsyncable + self.orphans

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
    synced = app.tables()  # all of them: tables sharing a target decide together what is extra
    names = [app.config.table(n).source for n in tables] if tables else list(synced)
    return verify_tables(app, [synced[n] for n in names], repair, progress, synced)


def verify_tables(
    app: App,
    tables: Sequence[SyncedTable],
    repair: bool,
    progress: Progress | None = None,
    synced: Mapping[str, SyncedTable] | None = None,
) -> VerifyResult:
    """Compare these tables with DynamoDB, repairing when asked. `synced` are all
    the configured tables: an item is extra only if no row of any table writing
    to its target produces it."""
    everyone = synced if synced is not None else {t.name: t for t in tables}
    result = VerifyResult(repair=repair)
    for target in dict.fromkeys(t.target for t in tables):
        requested = [t for t in tables if t.target == target]
        neighbours = [t for t in everyone.values() if t.target == target and t not in requested]
        check = _TargetCheck(app, target, requested, neighbours, repair, progress)
        result.tables.extend(check.run())
    return result


class _Produced:
    """The item keys the current rows produce, in a TEMP table (outside the
    application's file): which row claimed each, so a second one is a collision."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        conn.execute(sql.PRODUCED_CREATE)
        conn.execute(sql.PRODUCED_CLEAR)

    def claim(self, item: str, ref: RowRef) -> RowRef | None:
        """Record that `ref` produces `item`; the row that claimed it first, if another."""
        if self.conn.execute(sql.PRODUCED_CLAIM, (item, *ref)).rowcount:
            return None
        owner = RowRef(*self.conn.execute(sql.PRODUCED_OWNER, (item,)).fetchone())
        return None if owner == ref else owner

    def has(self, item: str) -> bool:
        """Whether some current row produces `item`."""
        return self.conn.execute(sql.PRODUCED_OWNER, (item,)).fetchone() is not None


class _TargetCheck:
    """The two sweeps over one target: its tables' rows, then its items."""

    def __init__(
        self,
        app: App,
        target: str,
        requested: list[SyncedTable],
        neighbours: list[SyncedTable],
        repair: bool,
        progress: Progress | None,
    ) -> None:
        self.app, self.target, self.repair, self.progress = app, target, repair, progress
        self.requested, self.neighbours = requested, neighbours
        self.by_name = {t.name: t for t in requested + neighbours}
        self.reports = {t.name: TableReport(t.name, target) for t in requested}
        self.stats = RequestStats()
        self.writer = app.writer("backfill") if repair else None
        tracked = any(t.tracked for t in requested + neighbours)
        self.produced = _Produced(app.conn) if tracked else None
        self.referenced: set[tuple[str, str]] = set()  # the S3 objects the target's items point to

    def run(self) -> list[TableReport]:
        """Both sweeps, then the S3 objects; a report per requested table."""
        for t in self.requested:
            self._rows(t)
        for t in self.neighbours:
            self._produce(t)
        started = time.time()
        self._items()
        self._objects(started)
        return list(self.reports.values())

    def _rows(self, t: SyncedTable) -> None:
        """Every row's item must be in DynamoDB as the row maps it."""
        report, conn = self.reports[t.name], self.app.conn
        total = t.count(conn) if self.progress else None
        for chunk in t.chunks(conn, MAX_BATCH_GET):
            if self.app.stop.is_set():
                raise TargetUnavailableError(f"verifying {t.name!r}: stopped")
            self.app.heartbeat()
            expected, rejected = self._expected(t, chunk)
            rejected += chunk.refused
            for r in rejected:
                report.unsyncable += 1
                report.note(f"{t.name} key {r.ref.key!r}: cannot be stored: {r.reason}")
            report.rows += len(chunk.rows) + len(chunk.refused)
            found = fetch_items(self.app, t.target, [w.key for w in expected], self.stats) if expected else {}
            writes: list[Write] = []
            identical: list[Write] = []
            for w in expected:
                have = found.get(w.key_text)
                if have is None:
                    report.missing += 1
                    report.note(f"{t.name} key {w.ref.key!r}: missing in {t.target}")
                elif not oversize.same_stored(w.item or {}, have):
                    report.different += 1
                    report.note(f"{t.name} key {w.ref.key!r}: differs in {t.target}")
                elif w.upload is not None and not self._object_holds(w):
                    report.different += 1
                    report.note(f"{t.name} key {w.ref.key!r}: its S3 object is missing or differs")
                else:
                    identical.append(w)
                    continue
                writes.append(w)
            self._fix(report, writes, rejected, identical=identical, tracked=t.tracked)
            if self.progress:
                self.progress(t.name, report.rows, total)

    def _expected(self, t: SyncedTable, chunk: Chunk) -> tuple[list[Write], list[Rejected]]:
        """The Puts a chunk's rows need, and the rows that cannot have an item."""
        writes: list[Write] = []
        rejected: list[Rejected] = []
        for ref, row in zip(chunk.refs, chunk.rows, strict=True):
            w = t.put(ref, chunk.columns, row)
            if self.produced is not None and isinstance(w, Write):
                item = w.key_text
                other = self._claim(item, ref)
                if other is not None:
                    w = owners.collision(ref, other, item)
            (writes if isinstance(w, Write) else rejected).append(w)  # type: ignore[arg-type]
        return writes, rejected

    def _claim(self, item: str, ref: RowRef) -> RowRef | None:
        """Note that `ref` produces `item`; the row that keeps it instead, if
        another: its recorded owner while that row still produces it, else the first row seen."""
        assert self.produced is not None
        owner = owners.recorded_owner(self.app.conn, self.target, item, self.by_name, exclude=(ref,))
        if owner is not None:
            self.produced.claim(item, owner)
        return self.produced.claim(item, ref)

    def _produce(self, t: SyncedTable) -> None:
        """Note the items a neighbour table's rows produce (it is not being verified)."""
        assert self.produced is not None
        for chunk in t.chunks(self.app.conn, MAX_BATCH_GET * 10):
            for ref, row in zip(chunk.refs, chunk.rows, strict=True):
                w = t.put(ref, chunk.columns, row)
                if isinstance(w, Write):
                    self._claim(w.key_text, ref)

    def _items(self) -> None:
        """Every item a verified table could own must be produced by a current row."""
        start: Item | None = None
        while True:
            scan = functools.partial(self.app.target.scan, self.target, start)
            page, start = self.app.retrier().call(scan, f"scanning {self.target!r}", self.stats)
            self.app.heartbeat()
            extras: dict[str, list[Write]] = {}
            with read_txn(self.app.conn):
                for it in page:
                    if (p := oversize.pointer(it)) is not None:
                        self.referenced.add((p.bucket, p.key))
                    owner = self._owner(it)
                    if owner is None:
                        continue  # another table's, or not dynasync's
                    name, t, key = owner
                    self.reports[name].items += 1
                    if self._produced(t, key):
                        continue
                    self.reports[name].extra += 1
                    self.reports[name].note(f"{name}: {self.target} has extra item {_show(key)}")
                    ref = t.ref_of_key(key)
                    extras.setdefault(name, []).append(Write.delete(ref, key))
            for name, writes in extras.items():
                self._fix(self.reports[name], writes, [], deletes=True)
            if start is None:
                return

    def _object_holds(self, w: Write) -> bool:
        """Whether the object a Put points to holds what it should (by SHA-256,
        without reading its body when S3 kept one)."""
        assert w.upload is not None
        return objects.holds(self.app.objects, self.app.retrier(), w.upload, self.stats)

    def _objects(self, started: float) -> None:
        """The S3 objects under `{prefix}{target}/` that no item points to, whatever
        the tables' policy is now (a table moved off "s3" may have left some);
        `--repair` first deletes those its own record holds, then these."""
        tables = [t for t in self.requested if t.location is not None]
        if not tables:
            return
        app = self.app
        if self.repair:
            objects.collect_all(app.conn, app.target, lambda: app.objects, app.retrier())
        d = app.config.dynamodb
        before = started - objects.grace(d.max_retry_time, d.connect_timeout + d.read_timeout)
        for location in dict.fromkeys(t.location for t in tables if t.location is not None):
            store, retrier = app.objects, app.retrier()
            found = objects.sweep(app.conn, store, retrier, location, self.target, self.referenced, before,
                                  self.repair)
            report = self.reports[tables[0].name]
            report.orphans += len(found.orphans)
            report.repaired += found.deleted
            for bucket, key in found.orphans:
                report.note(f"{self.target}: s3://{bucket}/{key} is an orphan: no item points to it")

    def _owner(self, item: Item) -> tuple[str, SyncedTable, Item] | None:
        """The verified table an item could belong to, and the item's key; None for anyone else's item."""
        for t in self.requested:
            if t.could_own(item):
                return t.name, t, t.items.key_of(item)
        return None

    def _produced(self, t: SyncedTable, key: Item) -> bool:
        if self.produced is not None:
            return self.produced.has(key_text(key))
        return t.row_for_key(self.app.conn, key) is not None

    def _fix(
        self,
        report: TableReport,
        writes: list[Write],
        rejected: list[Rejected],
        identical: Sequence[Write] = (),
        tracked: bool = False,
        deletes: bool = False,
    ) -> None:
        """Repair: send the writes; record dead letters, and which row owns which
        item. The rows whose Put DynamoDB now holds (written, or found `identical`)
        are done with their dead letters; the items whose Delete it took
        (`deletes`) are forgotten."""
        if self.writer is None:
            return
        out = self.writer.write(self.target, writes) if writes else WriteResult()
        held = [*identical, *(w for w in out.delivered if w.is_put)]
        with write_txn(self.app.conn):
            for w in held if tracked else ():
                owners.record(self.app.conn, w.ref, self.target, w.key_text)
            for w in out.delivered if deletes else ():
                owners.forget(self.app.conn, self.target, w.key_text)
            state.record_dead_letters(self.app.conn, rejected + out.rejected, None, [w.ref for w in held])
        report.repaired += len(out.delivered)


def fetch_items(app: App, target: str, keys: list[Item], stats: RequestStats) -> dict[str, Item]:
    """The items DynamoDB holds for these keys, by key (key_text)."""
    if not keys:
        return {}
    names = list(keys[0])
    items = app.retrier().drain(
        functools.partial(app.target.batch_get, target), keys, f"reading {target!r}", stats, "UnprocessedKeys"
    )
    return {key_text({k: it[k] for k in names}): it for it in items}


def _show(key: Item) -> str:
    return repr([next(iter(av.values())) for av in key.values()])
