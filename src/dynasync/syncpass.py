"""One incremental pass: changelog slice -> one write per DynamoDB key ->
DynamoDB -> advance the high-water mark. Repeats slice by slice until it
reaches the end of the changelog as it was when the pass started."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from dynasync import changelog, identity, objects, owners, reconcile, state
from dynasync.app import App
from dynasync.changelog import Slice
from dynasync.database import READ_BYTES, rows_that_fit, write_txn
from dynasync.drift import SchemaWatch
from dynasync.logs import fields
from dynasync.progress import Progress
from dynasync.retry import RequestStats
from dynasync.tables import SyncedTable
from dynasync.writer import Delivery, WriteResult
from dynasync.writes import Change, DeadLetterKind, Rejected, RowRef, Write

log = logging.getLogger(__name__)

# About how many bytes of row values one slice holds at most: with the slice in
# flight and the next one planned, a pass's memory stays flat however big the rows.
SLICE_BYTES = READ_BYTES



@dataclass
class PassResult:
    """What one pass did."""

    slices: int = 0
    entries: int = 0
    puts: Counter[str] = field(default_factory=Counter)  # by table
    deletes: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    high_water_mark: int = 0
    reconciled: list[str] = field(default_factory=list)
    stats: RequestStats = field(default_factory=RequestStats)
    seconds: float = 0.0
    more: bool = False  # stopped at its deadline with changes left
    failed: dict[str, str] = field(default_factory=dict)  # tables set aside, and why
    identity: str | None = None  # why the database is not the one synced last, when it is not

    @property
    def applied(self) -> int:
        """Writes DynamoDB acknowledged."""
        return sum(self.puts.values()) + sum(self.deletes.values())


@dataclass
class SlicePlan:
    """The writes one slice needs, by target table, and what becomes of the rest."""

    writes: dict[str, list[Write]] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    # Gone rows whose key DynamoDB could never hold: nothing to delete.
    settled: list[RowRef] = field(default_factory=list)
    targets: list[owners.TargetPlan] = field(default_factory=list)


def plan_slice(conn: sqlite3.Connection, synced: dict[str, SyncedTable], sl: Slice) -> SlicePlan:
    """One write per DynamoDB key: each changed row's Put or Delete, and the
    Delete of an item a row left; a row claiming an item another row holds is
    a dead letter (dynasync.owners)."""
    by_target: dict[str, list[Change]] = {}
    p = SlicePlan()
    for name, changes in sl.changes.items():
        table, columns = synced[name], sl.columns[name]
        if not table.tracked:
            # Its keys are its primary keys and no other table writes to its
            # target: the slice's keys are distinct items, nothing to arbitrate.
            _plan_untracked(table, columns, changes, p)
            continue
        planned = by_target.setdefault(table.target, [])
        planned.extend(table.change(ch.ref, columns, ch.row, ch.old, ch.refused) for ch in changes)
    for target, planned in by_target.items():
        tp = owners.plan_target(conn, target, planned, synced)
        p.writes[target] = tp.writes
        p.rejected.extend(tp.rejected)
        p.settled.extend(tp.settled)
        p.targets.append(tp)
    return p


def _plan_untracked(
    table: SyncedTable, columns: list[str], changes: list[changelog.KeyChange], p: SlicePlan
) -> None:
    writes = p.writes.setdefault(table.target, [])
    for ch in changes:
        if ch.refused is not None:
            p.rejected.append(Rejected(ch.ref, ch.refused, kind=DeadLetterKind.FILTER))
            continue
        w = table.put(ch.ref, columns, ch.row) if ch.row is not None else table.delete(ch.ref)
        if w is None:
            p.settled.append(ch.ref)
        elif isinstance(w, Write):
            writes.append(w)
        else:
            p.rejected.append(w)


@dataclass
class _InFlight:
    """A slice whose writes are being delivered."""

    slice: Slice
    plan: SlicePlan
    delivery: Delivery


class Syncer:
    """Runs passes; keeps the synced tables between passes until the schema changes."""

    def __init__(self, app: App, stepped: bool = False) -> None:
        """`stepped`: reconciles are left to the caller's steps between passes (the
        daemon, dynasync.background); otherwise a pass runs them to the end first."""
        self.app = app
        self.stepped = stepped
        self.schema = SchemaWatch(app)
        self.identity = identity.Tracker(app.config.database)
        self._collect_failed = False  # the last collect of S3 objects failed (logged once)
        self._bytes_per_entry = 0.0  # of the last slice's rows: sizes the next one

    def run_pass(
        self, until: int | None = None, progress: Progress | None = None, deadline: float | None = None
    ) -> PassResult:
        """Apply the changelog up to `until` (default: its end now); with a
        `deadline` (time.monotonic()), no slice is read after it, and `more`
        says changes were left for the next pass.

        Slices are pipelined: while one slice's writes are in flight, the next
        is read and planned. Its writes are only sent once the previous slice
        is acknowledged and committed, so the writes of a key never overtake.
        """
        with self.schema.watching_targets():
            return self._run(until, progress, deadline)

    def _run(self, until: int | None, progress: Progress | None, deadline: float | None) -> PassResult:
        started = time.monotonic()
        conn = self.app.conn
        result = PassResult()
        state.require_installed(conn)
        hwm = state.high_water_mark(conn)
        state.check_position(conn, hwm)
        result.identity = self._check_identity(hwm)
        refresh = self.schema.refresh()
        if not self.stepped and refresh.owed:
            done, _ = reconcile.run(self.app, refresh.tables)
            result.reconciled.extend(done)
        result.failed = {name: str(e) for name, e in refresh.failed.items()}
        end = until if until is not None else changelog.last_seq(conn)
        total = changelog.pending(conn, hwm) if progress else None

        def report() -> None:
            if progress:
                progress("changelog", result.entries, max(total or 0, result.entries))

        self._pipeline(refresh.tables, hwm, end, result, report, deadline)
        self._collect(result, whole=deadline is None)
        result.high_water_mark = state.high_water_mark(conn)
        self.identity.ended(result.high_water_mark)
        result.seconds = time.monotonic() - started
        return result

    def _pipeline(
        self,
        synced: dict[str, SyncedTable],
        hwm: int,
        end: int,
        result: PassResult,
        report: Callable[[], None],
        deadline: float | None = None,
    ) -> None:
        """Read and plan each slice while the previous one's writes are in flight."""
        app, conn = self.app, self.app.conn
        reads = {name: t.read for name, t in synced.items()}
        writer = app.writer()
        read_to = hwm
        in_flight: _InFlight | None = None
        while True:
            app.heartbeat()
            sl = None
            late = deadline is not None and time.monotonic() >= deadline
            if read_to < end and not app.stop.is_set() and not late:
                sl = changelog.read_slice(conn, reads, read_to, self._slice_size(deadline), SLICE_BYTES)
                if sl is not None and sl.entries:
                    self._bytes_per_entry = sl.bytes / sl.entries
            result.more = read_to < end and late
            plan = plan_slice(conn, synced, sl) if sl is not None else None
            if plan is not None and any(tp.claims for tp in plan.targets):
                with write_txn(conn):  # claims are recorded before their Puts go out
                    owners.intend(conn, plan.targets)
            read_to = sl.high if sl is not None else read_to
            if in_flight is not None:
                outcome = in_flight.delivery.wait()
                self._commit(synced, in_flight.slice, in_flight.plan, outcome, result, plan)
                in_flight = None
                report()
            if sl is None or plan is None:
                return
            if any(plan.writes.values()):
                self.identity.sending(conn, sl.high)  # a restore to the mark must not hide these writes
            in_flight = _InFlight(sl, plan, writer.start(plan.writes))

    def _collect(self, result: PassResult, whole: bool) -> None:
        """Delete the S3 objects no item points to any more (dynasync.objects): a
        step each pass, or all of them (`whole`). Now no write is in flight. S3 or
        a target out of reach fails nothing: the objects stay recorded for the next pass."""
        app = self.app
        failed: dict[str, str] = {}
        while True:
            done = objects.collect(app.conn, app.target, lambda: app.objects, app.retrier(), skip=failed)
            result.stats.add(done.stats)
            failed.update(done.failed)
            if not (whole and done.more):
                break
        if failed:
            level = logging.DEBUG if self._collect_failed else logging.WARNING
            log.log(level, "could not delete S3 objects no item points to; retrying at the next pass",
                    extra=fields(targets=sorted(failed), error=next(iter(failed.values()))))
        self._collect_failed = bool(failed)

    def _check_identity(self, hwm: int) -> str | None:
        """Whether the database is the continuation of the one the last pass saw
        (dynasync.identity); when not, every table owes a reconcile, which runs
        before this pass trusts the changelog (or, in the daemon, beside it)."""
        conn, path = self.app.conn, self.app.config.database
        verdict = self.identity.check(conn, state.generation(conn), hwm)
        if verdict.why is not None:
            log.warning("the database is not the one synced last: reconciling every table",
                        extra=fields(database=str(path), why=verdict.why))
            with write_txn(conn):
                state.flag_reconcile(conn, [t.source for t in self.app.config.tables])
                state.record_identity_change(conn, verdict.why)
            self.schema.invalidate()
        return verdict.why

    def _slice_size(self, deadline: float | None) -> int:
        """Changelog rows for the next slice: [sync] batch_size, or, in a turn with a
        deadline under a write budget, what the budget lets through before the
        deadline (a change is at least one unit), so a slow budget never makes one
        turn hold the other databases (and the watchdog's READY) for minutes."""
        size = self.app.config.sync.batch_size
        # Big rows: as many as SLICE_BYTES holds, as the last slice went.
        size = rows_that_fit(SLICE_BYTES, self._bytes_per_entry, size)
        bucket = self.app.budgets["sync"].bucket
        if deadline is None or bucket is None:
            return size
        return max(1, min(size, int(bucket.rate * max(0.0, deadline - time.monotonic()))))

    def _commit(
        self,
        synced: dict[str, SyncedTable],
        sl: Slice,
        plan: SlicePlan,
        delivery: WriteResult,
        result: PassResult,
        later: SlicePlan | None = None,
    ) -> None:
        """Save what became of a slice's writes; `later`, the next slice planned
        meanwhile, keeps the items its rows put again under their record."""
        rejected = plan.rejected + delivery.rejected
        delivered = plan.settled + [w.ref for w in delivery.delivered]
        tables = {ref.table for ref in delivered} | {r.ref.table for r in rejected}

        def records(conn: sqlite3.Connection) -> None:
            after = later.targets if later is not None else ()
            freed = owners.commit(conn, plan.targets, delivery.delivered, delivery.rejected, synced, after)
            owners.requeue_collisions(conn, freed, synced.values())

        state.commit_pass(self.app.conn, sl.high, rejected, delivered, tables=tables, records=records)
        for r in rejected:
            log.warning("dead letter", extra=fields(table=r.ref.table, key=list(r.ref.key), reason=r.reason))
        for w in delivery.delivered:
            (result.puts if w.is_put else result.deletes)[w.ref.table] += 1
        result.stats.add(delivery.stats)
        result.rejected += len(rejected)
        result.slices += 1
        result.entries += sl.entries


def sync(app: App, progress: Progress | None = None) -> PassResult:
    """`dynasync sync`: apply every change pending now, then return; a table that
    cannot be synced now fails the command, after every other table is synced."""
    app.lock()
    syncer = Syncer(app)
    result = syncer.run_pass(progress=progress)
    syncer.schema.refresh().raise_failed()
    return result
