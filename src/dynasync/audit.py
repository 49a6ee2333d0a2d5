"""Continuous verification: a safety net for what nobody foresaw.

With `[verify] rows_per_second`, `run` compares a rolling sample of each
database with DynamoDB, within that read budget: every table's rows in key
order (each row's item read back), then its target's items (an item the
table could own that no row produces), table after table, in a cycle that
starts over when it ends. It never trusts what it checks over the normal
path: a row whose item is missing or differs has its key logged in the
changelog again, so the next pass writes it (a key with changes pending is
skipped: the pass is about to write it anyway), and an item no row produces
is deleted. A restore or replaced file that went unnoticed (the state
directory lost with it) heals within one cycle.

Its place in the cycle is kept in the state (`audit`), so a restart goes on
from there; `status` shows when the last full cycle ended, and the metrics
count what it checked and what differed.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass

from dynasync import oversize, owners, sql, state
from dynasync.app import App
from dynasync.database import write_txn
from dynasync.retry import RequestStats
from dynasync.state import ReconcileJob
from dynasync.tables import SyncedTable
from dynasync.target import MAX_BATCH_GET
from dynasync.values import Item, key_from_text, key_text
from dynasync.verify import fetch_items
from dynasync.writes import Write

BURST_SECONDS = 2.0  # the most reading budget that accumulates while nothing is checked


@dataclass
class Counts:
    """What the audit checked and found out of line, since asked last."""

    checked: int = 0
    mismatches: int = 0


class Audit:
    """One database's continuous verification, a few rows or items at a time."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.counts = Counts()
        self._allowance = 0.0
        self._last = time.monotonic()
        self.stats = RequestStats()

    def step(self, synced: dict[str, SyncedTable]) -> None:
        """Check as many rows or items as the read budget allows now."""
        rate = self.app.config.verify.rows_per_second
        now = time.monotonic()
        if rate is None or not synced:
            self._last = now
            return
        self._allowance = min(rate * BURST_SECONDS, self._allowance + rate * (now - self._last))
        self._last = now
        n = min(int(self._allowance), MAX_BATCH_GET)
        if n < 1:
            return
        name, job = self._place(synced)
        table = synced[name]
        checked = self._rows(table, job, n) if job.phase == state.ROWS else self._items(table, job, n, synced)
        self._allowance -= max(1, checked)
        self._save(name, job, synced)

    def _place(self, synced: dict[str, SyncedTable]) -> tuple[str, ReconcileJob]:
        """Which table the cycle is at, and where in it."""
        doc = state.audit_place(self.app.conn)
        names = list(synced)
        if doc is None or doc.get("table") not in synced:
            return names[0], ReconcileJob(names[0])
        return str(doc["table"]), ReconcileJob.from_json(str(doc["table"]), json.dumps(doc["job"]))

    def _save(self, name: str, job: ReconcileJob, synced: dict[str, SyncedTable]) -> None:
        """Keep the cycle's place; a table done moves it to the next, and the last ends the cycle."""
        ended = False
        if job.phase == "done":
            names = list(synced)
            following = names.index(name) + 1
            ended = following == len(names)
            name = names[0] if ended else names[following]
            job = ReconcileJob(name)
        with write_txn(self.app.conn):
            state.save_audit_place(self.app.conn, {"table": name, "job": json.loads(job.to_json())}, ended)

    def _rows(self, table: SyncedTable, job: ReconcileJob, n: int) -> int:
        """Up to n rows after the cursor: a row whose item is missing or differs is logged again."""
        conn = self.app.conn
        chunk = next(iter(table.chunks(conn, n, job.after)), None)
        if chunk is None:
            job.phase, job.after = state.ITEMS, None
            return 0
        puts = [w for w in table.puts(chunk) if isinstance(w, Write)]
        held = fetch_items(self.app, table.target, [w.key for w in puts], self.stats)
        hwm = state.high_water_mark(conn)
        stale = [w.ref for w in puts if not oversize.same_stored(w.item or {}, held.get(w.key_text) or {})]
        stale = [ref for ref in stale if not conn.execute(sql.CHANGELOG_KEY_PENDING, (hwm, *ref)).fetchone()]
        if stale:
            with write_txn(conn):
                for ref in stale:
                    conn.execute(sql.CHANGELOG_ENQUEUE, (ref.table, sql.OP_UPDATE, ref.k1, ref.k2))
        job.after = chunk.last
        self._count(len(chunk.rows), len(stale))
        if len(chunk.rows) + len(chunk.refused) < n:
            job.phase, job.after = state.ITEMS, None
        return len(chunk.rows)

    def _items(self, table: SyncedTable, job: ReconcileJob, n: int, synced: dict[str, SyncedTable]) -> int:
        """Up to n items of the target after the cursor: one the table could own,
        that no row produces, is deleted."""
        start = key_from_text(job.start) if job.start else None
        scan = functools.partial(self.app.target.scan, table.target, start)
        page, after = self.app.retrier().call(scan, f"scanning {table.target!r}", self.stats)
        looked = page[:n]
        conn = self.app.conn
        keys = [table.items.key_of(item) for item in looked if table.could_own(item)]
        extras = [
            Write.delete(table.ref_of_key(k), k) for k in keys if not owners.produced(conn, table, k, synced)
        ]
        if extras:
            out = self.app.writer().write(table.target, extras)
            owners.forget_deleted(conn, table, out.delivered)
        self._count(len(looked), len(extras))
        last: Item | None = looked[-1] if len(looked) < len(page) else None
        resume = {k: last[k] for k, _ in table.items.key_schema} if last is not None else after
        job.start = key_text(resume) if resume is not None else None
        if resume is None:
            job.phase = "done"
        return len(looked)

    def _count(self, checked: int, mismatches: int) -> None:
        self.counts.checked += checked
        self.counts.mismatches += mismatches

    def taken(self) -> Counts:
        """What was checked and found out of line since the last call."""
        counts, self.counts = self.counts, Counts()
        return counts
