"""Follow the schema, and the target tables, between passes.

When SQLite's schema cookie moves, the tables are inspected again and:
capture is re-armed where a migration removed or outdated it; the target
tables are checked again; and each table whose rows may have changed without
a trigger firing owes a reconcile with DynamoDB (dynasync.reconcile, taken
in steps). That is a table whose capture was missing or out of date, one
reshaped so that existing rows map to other items (a column dropped or
renamed, or added with a non-NULL default), one whose mapping changed, or
one set aside for a while (its mapping did not fit it).

The target tables are also checked every TARGET_CHECK_INTERVAL seconds and
after a write found one missing. A target that was deleted, or replaced by
another table of the same name, lost its items: its source tables are
reconciled, which restores them, as soon as it exists again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dynasync import capture, owners, provision, sql, state, tables
from dynasync.app import App
from dynasync.config import Config
from dynasync.database import write_txn
from dynasync.exceptions import DynasyncError, MappingError, Poison, TableMissingError
from dynasync.logs import fields
from dynasync.schema import TableSchema, reshaped
from dynasync.tables import SyncedTable

log = logging.getLogger(__name__)

TARGET_CHECK_INTERVAL = 60.0


@dataclass
class Refresh:
    """The tables as they are now, those that owe a reconcile, and those set
    aside: configured, but they cannot be synced now (and why)."""

    tables: dict[str, SyncedTable]
    owed: list[str] = field(default_factory=list)
    failed: dict[str, DynasyncError] = field(default_factory=dict)

    def raise_failed(self) -> None:
        """Raise the first set-aside table's error (the commands that need every table)."""
        for error in self.failed.values():
            raise error


class SchemaWatch:
    """Keeps the synced tables current with the schema; cheap while nothing changes."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._cookie: int | None = None
        self._tables: dict[str, SyncedTable] = {}
        self._failed: dict[str, DynasyncError] = {}
        self._targets_checked = 0.0

    def invalidate(self) -> None:
        """Inspect everything again at the next refresh (the config changed)."""
        self._cookie = None
        self._targets_checked = 0.0

    def recheck_targets(self) -> None:
        """Check the target tables at the next refresh (a write found one missing)."""
        self._targets_checked = 0.0

    @contextlib.contextmanager
    def watching_targets(self) -> Iterator[None]:
        """Work that writes to the targets (a pass, a reconcile, a copy): a target it
        finds missing is noted for status, and checked (with create_tables recreated,
        then restored) at the next refresh, not a TARGET_CHECK_INTERVAL later."""
        try:
            yield
        except TableMissingError as e:
            state.mark_target_missing(self.app.conn, e.table)
            self.recheck_targets()
            raise

    def refresh(self) -> Refresh:
        """The current tables, after re-arming capture; a table whose rows may
        have changed unseen owes a reconcile (dynasync.reconcile), which starts now."""
        conn = self.app.conn
        cookie = conn.execute(sql.SCHEMA_COOKIE).fetchone()[0]
        changed = cookie != self._cookie
        if not changed and time.monotonic() - self._targets_checked < TARGET_CHECK_INTERVAL:
            return Refresh(self._tables, failed=self._failed)
        found, failed, fresh, reshapes = self._tables, self._failed, set[str](), dict[str, bool]()
        previous: dict[str, dict[str, Any] | None] = {}
        if changed:
            # The cookie recorded is the one read with the schema, under the write
            # lock: a migration that lands later (even during a reconcile) moves
            # it on, and is seen next time.
            armed = capture.rearm(conn, self.app.config)
            cookie = armed.cookie
            found, failed = _build(self.app.config, armed.schemas, armed.failed)
            self._set_aside(failed)
            reshapes = _reshapes(self.app, found)
            fresh = set(armed.disarmed) | {n for n, r in reshapes.items() if r}
            previous = self._remapped(found)
        fresh |= set(self._check_targets(found))
        owed = self._owe(found, fresh & set(found), reshapes, previous)
        if changed and owed:
            log.warning("reconciling: rows changed without capture seeing them", extra=fields(tables=owed))
        self._tables, self._failed, self._cookie = found, failed, cookie
        return Refresh(found, owed, failed)

    def _set_aside(self, failed: dict[str, DynasyncError]) -> None:
        """Record the tables set aside, for status, and flag them for a reconcile:
        their changes are skipped meanwhile, so their items are made right once they are back."""
        with write_txn(self.app.conn):
            state.record_set_aside(self.app.conn, {name: str(e) for name, e in failed.items()})
            state.flag_reconcile(self.app.conn, failed)

    def _remapped(self, found: dict[str, SyncedTable]) -> dict[str, dict[str, Any] | None]:
        """Tables whose items follow another mapping than the config's now, each with
        that mapping's ownership (to recognise its items by; None when only the
        owners of the items are unknown); a table seen for the first time just records its mapping."""
        conn = self.app.conn
        out: dict[str, dict[str, Any] | None] = {}
        first: list[str] = []
        for name, t in found.items():
            stored = state.stored_mapping(conn, name)
            if stored is None:
                # Tracked now, but backfilled before dynasync recorded owners: learn them.
                if t.tracked and state.backfilled(conn, name) and not state.has_owners(conn, name):
                    out[name] = None
                else:
                    first.append(name)
            elif {"tracked": t.tracked, **stored} != t.mapping:
                out[name] = self._previous(name, t, stored)
        if first:
            with write_txn(conn):
                for name in first:
                    state.save_mapping(conn, name, found[name].mapping)
        return out

    def _previous(self, name: str, t: SyncedTable, stored: dict[str, Any]) -> dict[str, Any] | None:
        """The ownership that recognises the items of a table whose mapping changed, while reconciled."""
        # A state from before "tracked" was part of the mapping has not changed for lacking it.
        if stored.get("tracked", t.tracked) != t.tracked:
            log.warning("the table's item owners are now recorded: learning them", extra=fields(table=name))
        else:
            log.warning("the mapping changed: reconciling the table's items", extra=fields(table=name))
        if stored["target"] == t.target:
            ownership: dict[str, Any] = stored["ownership"]
            return ownership
        # A new target is filled whole; the old one is left as it is, as a copy,
        # and its owners record is dropped: no row writes there any more.
        log.warning("the table has a new target; its old one is left untouched",
                    extra=fields(table=name, old_target=stored["target"]))
        with write_txn(self.app.conn):
            owners.forget_target(self.app.conn, name, stored["target"])
        return None

    def _owe(
        self,
        found: dict[str, SyncedTable],
        fresh: set[str],
        reshapes: dict[str, bool],
        previous: dict[str, dict[str, Any] | None],
    ) -> list[str]:
        """Start the reconciles of the tables found stale, and save the new shapes and
        mappings with them (so they are not found stale again); every table that owes one."""
        conn = self.app.conn
        if fresh or reshapes or previous:
            with write_txn(conn):
                for name in sorted(fresh | set(previous)):
                    state.start_reconcile(conn, name, previous.get(name))
                state.save_shapes(conn, {n: found[n].schema.shape for n in reshapes})
                for name in previous:
                    state.save_mapping(conn, name, found[name].mapping)
        return state.flagged_for_reconcile(conn, list(found))

    def _check_targets(self, found: dict[str, SyncedTable]) -> list[str]:
        """Check (or create) the targets; the source tables whose target must be restored."""
        app = self.app
        create = app.config.dynamodb.create_tables
        check = provision.ensure_targets(found.values(), app.target, app.retrier(), create)
        self._targets_checked = time.monotonic()
        with write_txn(app.conn):
            restore = state.record_targets(app.conn, check.identities, provision.sources(found))
        for target in sorted({found[n].target for n in restore}):
            log.warning("DynamoDB table lost its items (deleted or replaced): restoring it",
                        extra=fields(table=target))
        return restore


def _build(
    config: Config, schemas: dict[str, TableSchema], failed: dict[str, DynasyncError]
) -> tuple[dict[str, SyncedTable], dict[str, DynasyncError]]:
    """The synced tables for the schemas whose mapping fits; the others join `failed`."""
    failed = dict(failed)
    fitting = {name: s for name, s in schemas.items() if name not in failed}
    for name, s in list(fitting.items()):
        try:
            tables.build(config, {name: s})
        except (DynasyncError, Poison) as e:
            failed[name] = e if isinstance(e, DynasyncError) else MappingError(name, "", str(e))
            del fitting[name]
    return tables.build(config, fitting), failed


def _reshapes(app: App, found: dict[str, SyncedTable]) -> dict[str, bool]:
    """Tables whose shape differs from the one saved: True when existing rows now map to other items."""
    out = {}
    for name, t in found.items():
        old = state.stored_shape(app.conn, name)
        if old is None or [list(c) for c in t.schema.shape] != old:
            out[name] = old is not None and reshaped(old, t.schema.shape)
    return out
