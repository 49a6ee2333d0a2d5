"""One-shot copy of every existing row, in key order and bounded chunks, with
its position saved after each acknowledged chunk so a restart continues.

Capture is already armed when backfill runs, so a row the application changes
meanwhile is logged; the pass that ends the backfill replays those keys from
their current state. Nothing is lost and nothing stays stale.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from dynasync import owners, state
from dynasync.app import App
from dynasync.database import write_txn
from dynasync.exceptions import StateError
from dynasync.logs import fields
from dynasync.progress import Progress
from dynasync.state import BackfillProgress
from dynasync.syncpass import PassResult, Syncer
from dynasync.tables import Chunk, SyncedTable
from dynasync.writer import Delivery
from dynasync.writes import Rejected, Write

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
    synced = syncer.schema.refresh().tables
    progress_by_table = _start(app, names)
    result = BackfillResult()
    for name in names:
        table = synced[name]
        saved = progress_by_table[name]
        tb = TableBackfill(name, rows=saved.rows, resumed=saved.last is not None and not saved.done)
        result.tables.append(tb)
        if saved.done:
            continue
        if tb.resumed:
            log.info("resuming backfill", extra=fields(table=name, rows_done=saved.rows))
        if not _copy(app, table, synced, saved, tb, progress):
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


def _copy(
    app: App,
    table: SyncedTable,
    synced: dict[str, SyncedTable],
    saved: BackfillProgress,
    tb: TableBackfill,
    progress: Progress | None,
) -> bool:
    """Copy one table from where it stopped; False when asked to stop first.

    Chunks are pipelined as a pass's slices are: while one chunk's writes are in
    flight the next is read and planned, and its writes go out once the first
    chunk is acknowledged and committed, so no write overtakes another of its item.
    """
    conn, writer = app.conn, app.writer("backfill")
    total = table.count(conn) if progress else None
    in_flight: _InFlight | None = None
    for chunk in table.chunks(conn, app.config.backfill.chunk_size, saved.last):
        if app.stop.is_set():
            break
        app.heartbeat()
        plan = _plan(conn, table, chunk, synced)
        if in_flight is not None:
            _land(app, table, synced, in_flight, tb)
            in_flight = None
            if progress:
                progress(table.name, tb.rows, total)
            if app.stop.is_set():
                break  # the planned chunk is copied on resume (claims recorded early are harmless)
        in_flight = _InFlight(chunk, plan, writer.start({table.target: plan.writes}))
    if in_flight is not None:
        _land(app, table, synced, in_flight, tb)
        if progress:
            progress(table.name, tb.rows, total)
    if app.stop.is_set():
        return False
    null_keyed = table.null_keyed(conn)
    state.finish_backfill(conn, table.name, null_keyed)
    tb.rejected += len(null_keyed)
    return True


@dataclass
class _InFlight:
    """A chunk whose writes are being delivered."""

    chunk: Chunk
    plan: owners.TargetPlan
    delivery: Delivery


def _plan(
    conn: sqlite3.Connection, table: SyncedTable, chunk: Chunk, synced: dict[str, SyncedTable]
) -> owners.TargetPlan:
    """A chunk's writes. A table whose keys are its primary keys, alone on its
    target, needs no owners record: its rows are distinct items."""
    if not table.tracked:
        plan = owners.TargetPlan(table.target)
        for w in table.puts(chunk):
            (plan.writes if isinstance(w, Write) else plan.rejected).append(w)  # type: ignore[arg-type]
        plan.rejected.extend(chunk.refused)
        return plan
    plan = owners.plan_target(conn, table.target, table.chunk_changes(conn, chunk), synced)
    if plan.claims:
        with write_txn(conn):  # claims are recorded before their Puts go out
            owners.intend(conn, [plan])
    return plan


def _land(
    app: App, table: SyncedTable, synced: dict[str, SyncedTable], flight: _InFlight, tb: TableBackfill
) -> None:
    """Wait for a chunk's writes, then save its position, owners and dead letters at once."""
    out = flight.delivery.wait()
    refused = {id(r.write) for r in out.rejected}
    delivered = [w for w in flight.plan.writes if id(w) not in refused]
    rejected = flight.plan.rejected + out.rejected

    def records(conn: sqlite3.Connection) -> None:
        _records(conn, flight.plan, delivered, out.rejected, synced)

    rows = len(flight.chunk.rows) + len(flight.chunk.refused)
    state.save_backfill_chunk(
        app.conn, flight.chunk.last, rows, rejected, records=records if table.tracked else None
    )
    tb.rows += rows
    tb.rejected += len(rejected)


def _records(
    conn: sqlite3.Connection,
    plan: owners.TargetPlan,
    delivered: list[Write],
    refused: list[Rejected],
    synced: dict[str, SyncedTable],
) -> None:
    """Commit a chunk's item owners; retry rows refused an item it freed."""
    freed = owners.commit(conn, [plan], delivered, refused, synced)
    owners.requeue_collisions(conn, freed, synced.values())
