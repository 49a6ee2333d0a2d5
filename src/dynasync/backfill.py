"""One-shot copy of every existing row, in key order and bounded chunks, with
its position saved after each acknowledged chunk so a restart continues.

Capture is already armed when backfill runs, so a row the application changes
meanwhile is logged; the pass that ends the backfill replays those keys from
their current state. Nothing is lost and nothing stays stale.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from dynasync import owners, reconcile, state
from dynasync.app import App
from dynasync.exceptions import StateError
from dynasync.logs import fields
from dynasync.progress import Progress
from dynasync.state import BackfillProgress
from dynasync.syncpass import PassResult, Syncer
from dynasync.tables import Chunk, SyncedTable
from dynasync.writer import Delivery

log = logging.getLogger(__name__)



@dataclass
class TableBackfill:
    """How one table's backfill went."""

    table: str
    rows: int = 0
    rejected: int = 0
    resumed: bool = False


@dataclass
class BackfillResult:
    """Every table's backfill, and the pass that applied changes made meanwhile."""

    tables: list[TableBackfill] = field(default_factory=list)
    catch_up: PassResult | None = None


def backfill(
    app: App, tables: Sequence[str] | None = None, progress: Progress | None = None
) -> BackfillResult:
    """`dynasync backfill`: copy every row of the configured (or named) tables, resuming a copy."""
    app.lock()
    conn = app.conn
    state.require_installed(conn)
    names = [app.config.table(n).source for n in tables] if tables else [t.source for t in app.config.tables]
    _check_position(app, restrict=bool(tables))
    # All of them (rows of another table may own an item this one renders),
    # and their mappings reconciled first: a copy under a changed mapping
    # would otherwise leave the old mapping's items behind.
    syncer = Syncer(app)
    refresh = syncer.schema.refresh()
    refresh.raise_failed()
    synced = refresh.tables
    reconcile.run(app, synced)
    progress_by_table = _start(app, names)
    result = BackfillResult()
    for name in names:
        saved = progress_by_table[name]
        copy = TableCopy(app, synced[name], synced, saved, progress)
        result.tables.append(copy.report)
        if saved.done:
            continue
        if copy.report.resumed:
            log.info("resuming backfill", extra=fields(table=name, rows_done=saved.rows))
        if not copy.step():
            return result
    result.catch_up = syncer.run_pass()
    return result


def _check_position(app: App, restrict: bool) -> None:
    """A full backfill may start over from the changelog's end when the state is ahead of it."""
    hwm = state.high_water_mark(app.conn)
    try:
        state.check_position(app.conn, hwm)
    except StateError:
        if restrict:
            raise
        # Every row is about to be copied from its current state, so the
        # changelog up to here is covered; deletions are left for verify --repair.
        log.warning("state was ahead of the changelog: restarting from the changelog's end")
        state.reset_position(app.conn)


def _start(app: App, names: list[str]) -> dict[str, BackfillProgress]:
    """Resume unfinished backfills; otherwise start these tables from the beginning."""
    saved = state.backfill_progress(app.conn)
    unfinished = [n for n in names if n in saved and not saved[n].done]
    state.start_backfill(app.conn, [n for n in names if not unfinished or n not in saved])
    return state.backfill_progress(app.conn)


class TableCopy:
    """One table's copy, from where it stopped, in pipelined chunks: while one
    chunk's writes are in flight the next is read and planned, and its writes
    go out once the first chunk is acknowledged and committed, so no write
    overtakes another of its item. The daemon copies a table a step at a time
    between its passes; `backfill` copies it in one step."""

    def __init__(
        self,
        app: App,
        table: SyncedTable,
        synced: dict[str, SyncedTable],
        saved: BackfillProgress,
        progress: Progress | None = None,
    ) -> None:
        self.app, self.table, self.synced, self.progress = app, table, synced, progress
        self.last = saved.last
        resumed = saved.last is not None and not saved.done
        self.report = TableBackfill(table.name, rows=saved.rows, resumed=resumed)
        self._total: int | None = None

    def step(self, until: float | None = None) -> bool:
        """Copy chunks until done, asked to stop, or past `until` (time.monotonic());
        True once the whole table is copied."""
        app, table, conn = self.app, self.table, self.app.conn
        writer = app.writer("backfill")
        if self.progress and self._total is None:
            self._total = table.count(conn)
        in_flight: _InFlight | None = None
        finished = True
        for chunk in table.chunks(conn, app.config.backfill.chunk_size, self.last):
            if self._pause(until):
                finished = False
                break
            app.heartbeat()
            plan = owners.plan_chunk(conn, table, chunk, self.synced)
            if in_flight is not None:
                self._land(in_flight)
                in_flight = None
                if self._pause(until):
                    # The planned chunk is copied next time (its claims, recorded early, are harmless).
                    finished = False
                    break
            in_flight = _InFlight(chunk, plan, writer.start({table.target: plan.writes}))
        if in_flight is not None:
            self._land(in_flight)
        if not finished or self.app.stop.is_set():
            return False
        null_keyed = table.null_keyed(conn)
        state.finish_backfill(conn, table.name, null_keyed)
        self.report.rejected += len(null_keyed)
        return True

    def _pause(self, until: float | None) -> bool:
        return self.app.stop.is_set() or (until is not None and time.monotonic() >= until)

    def _land(self, flight: _InFlight) -> None:
        """Wait for a chunk's writes, then save its position, owners and dead letters at once."""
        out = flight.delivery.wait()
        rejected = flight.plan.rejected + out.rejected

        def records(conn: sqlite3.Connection) -> None:
            owners.commit_chunk(conn, flight.plan, out.delivered, out.rejected, self.synced)

        rows = len(flight.chunk.rows) + len(flight.chunk.refused)
        tracked = records if self.table.tracked else None
        state.save_backfill_chunk(self.app.conn, flight.chunk.last, rows, rejected, records=tracked)
        self.last = flight.chunk.last
        self.report.rows += rows
        self.report.rejected += len(rejected)
        if self.progress:
            self.progress(self.table.name, self.report.rows, self._total)


@dataclass
class _InFlight:
    """A chunk whose writes are being delivered."""

    chunk: Chunk
    plan: owners.TargetPlan
    delivery: Delivery
