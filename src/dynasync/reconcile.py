"""The reconcile: one table brought back in line with DynamoDB after its rows
changed without capture seeing them (capture was missing or out of date, a
migration reshaped the rows, the mapping changed, the target was restored).

It is `verify --repair` for one table, resumable and taken in bounded steps
between passes, like a background copy (dynasync.backfill.TableCopy): while
a 200,000-row table is reconciled, the other tables, and a fleet's other
databases, keep their usual lag. It writes within the [backfill] budget.

Two phases, each with its cursor saved in the state after every acknowledged
step (dynasync.state.ReconcileJob), so a restart resumes it:

* rows: the table's rows in key order; each row's item is read from DynamoDB
  and written when it is missing or differs. A tracked table plans each chunk
  against its owners record (dynasync.owners), so a row's old items (a key
  that moved, a mapping changed) are deleted too;
* items: a scan of the target; an item the table could own (under its
  mapping now, or one it had before) that no current row produces is deleted.
  "Produced" is asked of the live database each time: the owners record for
  a tracked target, the row itself otherwise, so passes that run between two
  steps never make the sweep delete a row's new item.

Steps and passes run in turn on one thread, so a write of the reconcile and
a write of a pass for the same item are never in flight together.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time

from dynasync import oversize, owners, state
from dynasync.app import App
from dynasync.database import write_txn
from dynasync.items import Ownership
from dynasync.logs import fields
from dynasync.retry import RequestStats
from dynasync.state import ReconcileJob
from dynasync.tables import Chunk, SyncedTable
from dynasync.target import MAX_BATCH_GET
from dynasync.values import Item, key_from_text, key_text
from dynasync.verify import fetch_items
from dynasync.writer import WriteResult
from dynasync.writes import RowRef, Write

log = logging.getLogger(__name__)

STEP_SECONDS = 0.25  # how long one step of the daemon's reconciles may run


def run(app: App, synced: dict[str, SyncedTable], until: float | None = None) -> tuple[list[str], bool]:
    """Reconcile every table that owes it, in config order, until done or past
    `until` (time.monotonic()); (the tables finished now, whether any is left).
    A table set aside (not in `synced`) waits until it is back."""
    done: list[str] = []
    for name in state.flagged_for_reconcile(app.conn, [t.source for t in app.config.tables]):
        if name not in synced:
            continue
        job = state.reconcile_job(app.conn, name)
        if not TableReconcile(app, synced[name], synced, job).step(until):
            return done, True
        done.append(name)
    return done, False


class TableReconcile:
    """One table's reconcile, from where it stopped."""

    def __init__(
        self, app: App, table: SyncedTable, synced: dict[str, SyncedTable], job: ReconcileJob | None
    ) -> None:
        self.app, self.table, self.synced = app, table, synced
        self.job = job or ReconcileJob(table.name)
        self.previous = [Ownership.from_json(doc) for doc in self.job.previous]
        self.stats = RequestStats()

    def step(self, until: float | None = None) -> bool:
        """Work until done, asked to stop, or past `until`; True once the table is reconciled."""
        if self.job.phase == state.ROWS and not self._rows(until):
            return False
        if not self._items(until):
            return False
        with write_txn(self.app.conn):
            state.clear_reconcile(self.app.conn, [self.table.name])
        j = self.job
        log.info("reconciled", extra=fields(table=self.table.name, rows=j.rows, written=j.written,
                                            deleted=j.deleted, items=j.items))
        return True

    def _pause(self, until: float | None) -> bool:
        return self.app.stop.is_set() or (until is not None and time.monotonic() >= until)

    def _rows(self, until: float | None) -> bool:
        """Every row's item as the row maps it, chunk by chunk; True when the last row is done."""
        app, table, conn = self.app, self.table, self.app.conn
        writer = app.writer("backfill")
        # Each step does at least one chunk, however late it starts: a step that
        # could end before doing anything would never finish the reconcile.
        for n, chunk in enumerate(table.chunks(conn, MAX_BATCH_GET, self.job.after)):
            if n and self._pause(until):
                return False
            app.heartbeat()
            plan = owners.plan_chunk(conn, table, chunk, self.synced)
            sends, identical = self._differing(plan.writes)
            out = writer.write(table.target, sends) if sends else WriteResult()
            self._save_chunk(chunk, plan, out, [*identical, *(w for w in out.delivered if w.is_put)])
        if app.stop.is_set():
            return False
        self.job.phase, self.job.after = state.ITEMS, None
        with write_txn(conn):
            state.save_reconcile_job(conn, self.job)
        return True

    def _save_chunk(
        self, chunk: Chunk, plan: owners.TargetPlan, out: WriteResult, stored: list[Write]
    ) -> None:
        """A chunk's owners record, dead letters (done with for the rows whose
        item DynamoDB holds now: `stored`) and cursor, at once."""
        conn = self.app.conn
        self.job.after = chunk.last
        self.job.rows += len(chunk.rows) + len(chunk.refused)
        self.job.written += len(out.delivered)
        with write_txn(conn):
            if self.table.tracked:
                owners.commit_chunk(conn, plan, out.delivered, out.rejected, self.synced)
            state.record_dead_letters(conn, plan.rejected + out.rejected, None, [w.ref for w in stored])
            state.save_reconcile_job(conn, self.job)

    def _differing(self, writes: list[Write]) -> tuple[list[Write], list[Write]]:
        """(The writes DynamoDB does not hold already: Puts of items missing or
        different, and every Delete of an item a row left; the Puts it holds as they are)."""
        puts = [w for w in writes if w.is_put]
        held = fetch_items(self.app, self.table.target, [w.key for w in puts], self.stats)
        sends: list[Write] = []
        identical: list[Write] = []
        for w in writes:
            have = held.get(w.key_text) if w.is_put else None
            same = have is not None and oversize.same_stored(w.item or {}, have)
            (identical if same else sends).append(w)
        return sends, identical

    def _items(self, until: float | None) -> bool:
        """Delete the items the table could own that no current row produces; True at the scan's end."""
        app, target = self.app, self.table.target
        start = key_from_text(self.job.start) if self.job.start else None
        for n in itertools.count():
            if n and self._pause(until):
                return False
            scan = functools.partial(app.target.scan, target, start)
            page, after = app.retrier().call(scan, f"scanning {target!r}", self.stats)
            app.heartbeat()
            extras: list[Write] = []
            looked = 0
            for item in page:
                if looked and self._pause(until):  # at least one item a step, as above
                    break
                looked += 1
                key = self._key(item)
                if key is not None and not owners.produced(app.conn, self.table, key, self.synced):
                    extras.append(Write.delete(self._ref(key), key))
            self._delete(extras, looked)
            if looked < len(page):  # cut short: go on after the last item looked at
                if looked:
                    self._resume(page[looked - 1], None)
                return False
            start = self._resume(None, after)
            if start is None:
                return True
        return False  # not reached: itertools.count() never ends

    def _resume(self, last: Item | None, after: Item | None) -> Item | None:
        """Where the scan goes on (after the last item looked at when cut short, else
        the next page), saved; None at the scan's end."""
        if last is not None:
            after = {name: last[name] for name, _ in self.table.items.key_schema}
        self.job.start = key_text(after) if after is not None else None
        with write_txn(self.app.conn):
            state.save_reconcile_job(self.app.conn, self.job)
        return after

    def _delete(self, extras: list[Write], looked_at: int) -> None:
        """Send the Deletes of extra items, then forget them in the owners record."""
        self.job.items += looked_at
        if not extras:
            return
        out = self.app.writer("backfill").write(self.table.target, extras)
        self.job.deleted += len(out.delivered)
        owners.forget_deleted(self.app.conn, self.table, out.delivered)

    def _key(self, item: Item) -> Item | None:
        """The item's key, if the table could own it (under its mapping now or before); else None."""
        if self.table.could_own(item):
            return self.table.items.key_of(item)
        for ownership in self.previous:
            if ownership.could_own(item):
                return {name: item[name] for name, _ in ownership.key_schema}
        return None

    def _ref(self, key: Item) -> RowRef:
        return self.table.ref_of_key(key)
