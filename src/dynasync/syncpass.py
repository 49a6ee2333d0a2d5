"""One incremental pass: changelog slice -> one write per key -> DynamoDB ->
advance the high-water mark. Repeats slice by slice until it reaches the end of
the changelog as it was when the pass started."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dynasync import capture, changelog, mapping, state, verify
from dynasync import triggers as sql
from dynasync.app import App, log
from dynasync.changelog import Batch
from dynasync.database import write_txn
from dynasync.logs import fields
from dynasync.mapping import Poison
from dynasync.schema import TableSchema, reshaped
from dynasync.tablemap import TableMap
from dynasync.target import Ref, delete, put
from dynasync.writer import Write, Writer, WriteStats


@dataclass
class PassResult:
    batches: int = 0
    entries: int = 0
    puts: Counter[str] = field(default_factory=Counter)
    deletes: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    high_water_mark: int = 0
    reconciled: list[str] = field(default_factory=list)
    stats: WriteStats = field(default_factory=WriteStats)
    seconds: float = 0.0

    @property
    def applied(self) -> int:
        return sum(self.puts.values()) + sum(self.deletes.values())


@dataclass
class Plan:
    writes: dict[str, list[Write]] = field(default_factory=dict)  # by target table
    rejected: list[tuple[Ref, str]] = field(default_factory=list)
    delivered_without_write: list[Ref] = field(default_factory=list)


def plan_writes(app: App, maps: dict[str, TableMap], batch: Batch) -> Plan:
    p = Plan()
    # One write per DynamoDB key per request batch, even when two rows (or two
    # tables sharing a target) map to the same key.
    seen_by_target: dict[str, dict[tuple[Any, ...], Ref]] = {}
    for table, changes in batch.changes.items():
        tmap, columns = maps[table], batch.columns[table]
        target = app.config.table(table).target
        writes = p.writes.setdefault(target, [])
        seen = seen_by_target.setdefault(target, {})
        for ch in changes:
            ref: Ref = (table, ch.k1, ch.k2)
            try:
                if ch.row is not None:
                    item = tmap.item(columns, ch.row)
                    key = tmap.key_of(item)
                    request = put(item)
                else:
                    key = tmap.key((ch.k1, ch.k2))
                    request = delete(key)
            except Poison as e:
                if ch.row is None:
                    # A key DynamoDB cannot hold was never written: nothing to delete.
                    p.delivered_without_write.append(ref)
                else:
                    p.rejected.append((ref, str(e)))
                continue
            ident = mapping.key_identity(key)
            if ident in seen:
                p.rejected.append(
                    (ref, f"maps to the same DynamoDB key as row {seen[ident][1:]!r} of {table!r}")
                )
                continue
            seen[ident] = ref
            writes.append(Write(ref, request))
    return p


class Syncer:
    """Runs passes; keeps the schema between passes until the schema changes."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._cookie: int | None = None
        self._schemas: dict[str, TableSchema] = {}
        self._maps: dict[str, TableMap] = {}

    def _refresh_schema(self, result: PassResult) -> None:
        conn = self.app.conn
        cookie = conn.execute(sql.SCHEMA_COOKIE).fetchone()[0]
        if cookie == self._cookie:
            return
        schemas = self.app.schemas()
        capture.rearm(self.app, schemas)
        self.app.forget_targets()
        self.app.check_targets(schemas)
        self._schemas = schemas
        self._maps = self.app.table_maps(schemas)
        stale = set(state.flagged_for_reconcile(conn, schemas))
        changed = {}
        for name, s in schemas.items():
            old = state.stored_shape(conn, name)
            if old is None or [list(c) for c in s.shape] != old:
                changed[name] = s.shape
                if old is not None and reshaped(old, s.shape):
                    stale.add(name)
        if stale:
            tables = sorted(stale)
            log.warning("reconciling: rows changed without capture seeing them", extra=fields(tables=tables))
            verify.verify(self.app, tables=tables, repair=True)
            result.reconciled.extend(tables)
        if changed or stale:
            with write_txn(conn):
                state.save_shapes(conn, changed)
                state.clear_reconcile(conn, stale)
        self._cookie = conn.execute(sql.SCHEMA_COOKIE).fetchone()[0]

    def run_pass(
        self, until: int | None = None, progress: Callable[[str, int, int], None] | None = None
    ) -> PassResult:
        """Apply the changelog up to `until` (default: its end now).

        Slices are pipelined: while one slice's writes are in flight, the next
        is read and mapped. Its writes are only sent once the previous slice is
        acknowledged and committed, so the writes of a key never overtake.
        """
        started = time.monotonic()
        app, conn = self.app, self.app.conn
        result = PassResult()
        state.require_installed(conn)
        hwm = state.high_water_mark(conn)
        state.check_position(conn, hwm)
        self._refresh_schema(result)
        end = until if until is not None else changelog.last_seq(conn)
        total = changelog.pending(conn, hwm) if progress else 0
        writer = app.writer()
        read_to = hwm
        in_flight: tuple[Batch, Plan, Future[_Delivery]] | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dynasync-deliver") as pipe:
            try:
                while True:
                    app.heartbeat()
                    batch = plan = None
                    if read_to < end and not app.stop.is_set():
                        batch = changelog.read_batch(conn, self._schemas, read_to, app.config.sync.batch_size)
                    if batch is not None:
                        plan = plan_writes(app, self._maps, batch)
                        read_to = batch.high
                    if in_flight is not None:
                        self._commit(in_flight[0], in_flight[1], in_flight[2].result(), result)
                        in_flight = None
                        if progress:
                            progress("changelog", result.entries, max(total, result.entries))
                    if batch is None or plan is None:
                        break
                    in_flight = (batch, plan, pipe.submit(_deliver, writer, plan))
            finally:
                if in_flight is not None:
                    in_flight[2].cancel()
        result.high_water_mark = state.high_water_mark(conn)
        result.seconds = time.monotonic() - started
        return result

    def _commit(self, batch: Batch, plan: Plan, delivery: _Delivery, result: PassResult) -> None:
        rejected = plan.rejected + delivery.rejected
        delivered = plan.delivered_without_write + delivery.delivered
        tables = {ref[0] for ref in delivered} | {ref[0] for ref, _ in rejected}
        state.commit_pass(self.app.conn, batch.high, rejected, delivered, tables=tables)
        for ref, reason in rejected:
            log.warning("dead letter", extra=fields(table=ref[0], key=list(ref[1:]), reason=reason))
        for ref, is_put in delivery.applied:
            (result.puts if is_put else result.deletes)[ref[0]] += 1
        result.stats.add(delivery.stats)
        result.rejected += len(rejected)
        result.batches += 1
        result.entries += batch.entries


@dataclass
class _Delivery:
    delivered: list[Ref] = field(default_factory=list)
    rejected: list[tuple[Ref, str]] = field(default_factory=list)
    applied: list[tuple[Ref, bool]] = field(default_factory=list)
    stats: WriteStats = field(default_factory=WriteStats)


def _deliver(writer: Writer, plan: Plan) -> _Delivery:
    out = _Delivery()
    for target, writes in plan.writes.items():
        if not writes:
            continue
        res = writer.write(target, writes)
        out.stats.add(res.stats)
        bad = {id(w) for w, _ in res.rejected}
        out.rejected.extend((w.ref, reason) for w, reason in res.rejected)
        for w in writes:
            if id(w) not in bad:
                out.delivered.append(w.ref)
                out.applied.append((w.ref, "PutRequest" in w.request))
    return out


def sync(app: App, progress: Callable[[str, int, int], None] | None = None) -> PassResult:
    """`dynasync sync`: apply every change pending now, then return."""
    app.lock()
    return Syncer(app).run_pass(progress=progress)
