"""One-shot copy of every existing row, in key order and bounded chunks, with
its position saved after each acknowledged chunk so a restart continues.

Capture is already armed when backfill runs, so a row the application changes
meanwhile is logged; the pass that ends the backfill replays those keys from
their current state. Nothing is lost and nothing stays stale.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dynasync import state
from dynasync import triggers as sql
from dynasync.app import App, log
from dynasync.database import read_txn, write_txn
from dynasync.exceptions import StateError
from dynasync.logs import fields
from dynasync.mapping import Poison
from dynasync.source import chunks, key_of
from dynasync.syncpass import PassResult, Syncer
from dynasync.target import Ref, put
from dynasync.writer import Write

Progress = Callable[[str, int, int], None]


@dataclass
class TableBackfill:
    table: str
    rows: int = 0
    rejected: int = 0
    resumed: bool = False


@dataclass
class BackfillResult:
    tables: list[TableBackfill] = field(default_factory=list)
    catch_up: PassResult | None = None


def _progress_rows(conn: sqlite3.Connection) -> dict[str, tuple[Any, Any, int, int, int]]:
    return {r[0]: r[1:] for r in conn.execute(sql.BACKFILL_GET)}


def backfill(
    app: App, tables: Sequence[str] | None = None, progress: Progress | None = None
) -> BackfillResult:
    app.lock()
    conn = app.conn
    state.require_installed(conn)
    names = list(tables) if tables else [t.source for t in app.config.tables]
    for name in names:
        app.config.table(name)
    hwm = state.high_water_mark(conn)
    try:
        state.check_position(conn, hwm)
    except StateError:
        if tables:
            raise
        # Every row is about to be copied from its current state, so the
        # changelog up to here is covered; deletions are left for verify --repair.
        log.warning("state was ahead of the changelog: restarting from the changelog's end")
        state.reset_position(conn)
    schemas = app.schemas()
    app.check_targets(schemas)
    maps = app.table_maps(schemas)

    saved = _progress_rows(conn)
    unfinished = [n for n in names if n in saved and not saved[n][4]]
    with write_txn(conn):
        for n in names:
            if not unfinished or n not in saved:
                conn.execute(sql.BACKFILL_START, (n,))
    saved = _progress_rows(conn)

    result = BackfillResult()
    writer = app.writer()
    for name in names:
        k1, k2, started, done_rows, done = saved[name]
        tb = TableBackfill(name, rows=done_rows, resumed=bool(started) and not done)
        result.tables.append(tb)
        if done:
            continue
        schema = schemas[name]
        target = app.config.table(name).target
        total = conn.execute(sql.count_rows(name)).fetchone()[0]
        after = None if not started else (k1,) if len(schema.key) == 1 else (k1, k2)
        if tb.resumed:
            log.info("resuming backfill", extra=fields(table=name, rows_done=done_rows))
        for columns, rows in chunks(conn, schema, app.config.backfill.chunk_size, after):
            if app.stop.is_set():
                return result
            writes: list[Write] = []
            rejected: list[tuple[Ref, str]] = []
            for row in rows:
                ref: Ref = (name, *key_of(schema, columns, row))
                try:
                    writes.append(Write(ref, put(maps[name].item(columns, row))))
                except Poison as e:
                    rejected.append((ref, str(e)))
            out = writer.write(target, writes)
            rejected.extend((w.ref, reason) for w, reason in out.rejected)
            last = key_of(schema, columns, rows[-1])
            with write_txn(conn):
                conn.execute(sql.BACKFILL_PROGRESS, (*last, len(rows), name))
                state.record_dead_letters(conn, rejected, None)
            tb.rows += len(rows)
            tb.rejected += len(rejected)
            if progress:
                progress(name, tb.rows, total)
        with read_txn(conn):
            cur = conn.execute(sql.null_key_rows(name, schema.key))
            columns = [d[0] for d in cur.description]
            null_keyed = [
                ((name, *key_of(schema, columns, r)), "a key column is NULL") for r in cur
            ]
        with write_txn(conn):
            state.record_dead_letters(conn, null_keyed, None)
            conn.execute(sql.BACKFILL_DONE, (name,))
        tb.rejected += len(null_keyed)
    result.catch_up = Syncer(app).run_pass()
    return result
