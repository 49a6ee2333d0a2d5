"""Follow the schema between passes.

When SQLite's schema cookie moves, the tables are inspected again and:
capture is re-armed where a migration removed or outdated it; the target
tables are checked again; and each table whose rows may have changed without
a trigger firing is reconciled with DynamoDB (verify --repair). That is a
table whose triggers were gone, one flagged by an earlier reconcile that did
not finish, or one reshaped so that existing rows map to other items (a
column dropped or renamed, or added with a non-NULL default).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from dynasync import capture, sql, state, tables
from dynasync.app import App
from dynasync.database import write_txn
from dynasync.logs import fields
from dynasync.schema import reshaped
from dynasync.tables import SyncedTable
from dynasync.verify import verify_tables

log = logging.getLogger(__name__)


@dataclass
class Refresh:
    """The tables as they are now, and those reconciled to get there."""

    tables: dict[str, SyncedTable]
    reconciled: list[str] = field(default_factory=list)


class SchemaWatch:
    """Keeps the synced tables current with the schema; cheap while it does not change."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._cookie: int | None = None
        self._tables: dict[str, SyncedTable] = {}

    def refresh(self) -> Refresh:
        """The current tables, after re-arming and reconciling whatever the last schema change needs."""
        conn = self.app.conn
        cookie = conn.execute(sql.SCHEMA_COOKIE).fetchone()[0]
        if cookie == self._cookie:
            return Refresh(self._tables)
        found = tables.load(conn, self.app.config)
        schemas = {name: t.schema for name, t in found.items()}
        owed = state.flagged_for_reconcile(conn, found)
        disarmed = capture.rearm(conn, schemas)
        tables.ensure_targets(found.values(), self.app.target, self.app.retrier())
        reshapes = _reshapes(self.app, found)
        stale = sorted(set(owed) | set(disarmed) | {n for n, r in reshapes.items() if r})
        if stale:
            log.warning("reconciling: rows changed without capture seeing them", extra=fields(tables=stale))
            verify_tables(self.app, [found[n] for n in stale], repair=True)
        if reshapes or stale:
            with write_txn(conn):
                state.save_shapes(conn, {n: found[n].schema.shape for n in reshapes})
                state.clear_reconcile(conn, stale)
        self._tables = found
        self._cookie = conn.execute(sql.SCHEMA_COOKIE).fetchone()[0]
        return Refresh(found, stale)


def _reshapes(app: App, found: dict[str, SyncedTable]) -> dict[str, bool]:
    """Tables whose shape differs from the one saved: True when existing rows now map to other items."""
    out = {}
    for name, t in found.items():
        old = state.stored_shape(app.conn, name)
        if old is None or [list(c) for c in t.schema.shape] != old:
            out[name] = old is not None and reshaped(old, t.schema.shape)
    return out
