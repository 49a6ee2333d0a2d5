"""The work `run` does in the background, a step at a time between its
passes: the reconciles a database owes (dynasync.reconcile), then the copies
of tables added to the config while it runs, never backfilled, or whose
backfill stopped half way. Every other table keeps syncing with its usual
lag meanwhile, since a step lasts STEP_SECONDS and a pass runs between two
steps. Both write within the [backfill] budget.
"""

from __future__ import annotations

import logging
import time

from dynasync import reconcile, state
from dynasync.app import App
from dynasync.audit import Audit
from dynasync.backfill import TableCopy
from dynasync.drift import SchemaWatch
from dynasync.logs import fields
from dynasync.tables import SyncedTable

log = logging.getLogger(__name__)

STEP_SECONDS = 0.25


class Background:
    """The background work of one database: copies of its tables, a step at a time."""

    def __init__(self, app: App, schema: SchemaWatch) -> None:
        """`schema`: the database's tables as its passes follow them."""
        self.app = app
        self.schema = schema
        self.audit = Audit(app)

    def pending(self) -> list[str]:
        """The configured tables whose copy has not finished, in config order."""
        progress = state.backfill_progress(self.app.conn)
        return [t.source for t in self.app.config.tables if not (p := progress.get(t.source)) or not p.done]

    def step(self) -> bool:
        """Reconcile, or else copy, for up to STEP_SECONDS; whether work remains."""
        synced = self.schema.refresh().tables
        with self.schema.watching_targets():
            _, more = reconcile.run(self.app, synced, until=time.monotonic() + STEP_SECONDS)
            more = more or self._copy(synced)
            if not more:
                self.audit.step(synced)  # paced by its own read budget, so never "more"
        return more

    def _copy(self, synced: dict[str, SyncedTable]) -> bool:
        """Copy for up to STEP_SECONDS; whether a table still remains to copy."""
        todo = [name for name in self.pending() if name in synced]  # not a table set aside
        if not todo:
            return False
        name, conn = todo[0], self.app.conn
        progress = state.backfill_progress(conn)
        if name not in progress:
            log.info("copying the table in the background", extra=fields(table=name))
            state.start_backfill(conn, [name])
            progress = state.backfill_progress(conn)
        copy = TableCopy(self.app, synced[name], synced, progress[name])
        if not copy.step(until=time.monotonic() + STEP_SECONDS):
            return True
        log.info("background copy finished", extra=fields(table=name, rows=copy.report.rows,
                                                          dead_letters=copy.report.rejected))
        return len(todo) > 1
