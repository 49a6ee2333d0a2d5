"""Tables `run` copies in the background, a step at a time between its
passes: a table added to the config while it runs, one never backfilled,
or one whose backfill stopped half way. Every other table keeps syncing
with its usual lag meanwhile, since a step lasts STEP_SECONDS and a pass
runs between two steps. The copy writes within the [backfill] budget.
"""

from __future__ import annotations

import logging
import time

from dynasync import state
from dynasync.app import App
from dynasync.backfill import TableCopy
from dynasync.logs import fields
from dynasync.syncpass import Syncer

log = logging.getLogger(__name__)

STEP_SECONDS = 0.25


class Background:
    """The background work of one database: copies of its tables, a step at a time."""

    def __init__(self, app: App, syncer: Syncer) -> None:
        self.app = app
        self.syncer = syncer

    def pending(self) -> list[str]:
        """The configured tables whose copy has not finished, in config order."""
        progress = state.backfill_progress(self.app.conn)
        return [t.source for t in self.app.config.tables if not (p := progress.get(t.source)) or not p.done]

    def step(self) -> bool:
        """Copy for up to STEP_SECONDS; whether a table still remains to copy."""
        synced = self.syncer.schema.refresh().tables
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
