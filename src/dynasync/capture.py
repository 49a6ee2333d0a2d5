"""Install, check and remove capture: dynasync's own tables and the triggers
on every configured table."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dynasync import filters, provision, schema, sql, state, tables
from dynasync.app import App
from dynasync.config import Config
from dynasync.database import write_txn
from dynasync.exceptions import DynasyncError, Poison, SourceError
from dynasync.logs import fields
from dynasync.schema import TableSchema

log = logging.getLogger(__name__)


@dataclass
class CapturePlan:
    """The SQL that brings capture up to date, and what it found on the way."""

    statements: list[str] = field(default_factory=list)
    # Tables whose capture was missing or out of date: changes may have gone uncaptured.
    disarmed: list[str] = field(default_factory=list)
    # Tables armed for the first time: their rows are copied by a backfill, not reconciled.
    added: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class InitResult:
    """What `dynasync init` did (or, with --dry-run, would do)."""

    plan: CapturePlan
    created_tables: list[str] = field(default_factory=list)


def plan(conn: sqlite3.Connection, schemas: Mapping[str, TableSchema]) -> CapturePlan:
    """Compare the installed tables and triggers with what `schemas` need."""
    result = CapturePlan()
    present = state.installed_tables(conn)
    if sql.STATE in present:
        state.check_version(conn)  # never rewrite capture another release installed
    for table, ddl in sql.OWN_TABLE_DDL.items():
        if table not in present:
            result.statements.extend(ddl)
    existing = {name: (table, text) for name, table, text in conn.execute(sql.LIST_OWN_TRIGGERS)}
    wanted: dict[str, str] = {}
    for name, table_schema in schemas.items():
        triggers = sql.trigger_sql(table_schema.trigger_spec)
        wanted.update(triggers)
        # Capture that is missing, attached to another table (renamed away by a
        # migration) or out of date (a new UNIQUE index) may have missed changes.
        armed = all(
            n in existing and existing[n][0].lower() == name.lower() and existing[n][1] == text
            for n, text in triggers.items()
        )
        if sql.STATE in present and not armed and state.stored_shape(conn, name) is None:
            result.added.append(name)
        elif sql.STATE in present and not armed:
            result.disarmed.append(name)
            result.warnings.append(
                f"capture on table {name!r} was missing or out of date (a migration that rebuilds or "
                "renames a table, or adds a UNIQUE index, does this); it is re-armed and the table "
                "reconciled with DynamoDB"
            )
    for name, (_, text) in sorted(existing.items()):
        if wanted.get(name) != text:
            result.statements.append(sql.drop_trigger(name))
    for name, text in wanted.items():
        if existing.get(name, ("", ""))[1] != text:
            result.statements.append(text)
    return result


def apply(
    conn: sqlite3.Connection,
    p: CapturePlan,
    schemas: Mapping[str, TableSchema],
    owner: Path | None = None,
    takeover: bool = False,
) -> None:
    """Run a plan in one transaction; flag disarmed tables for reconciling.
    With `owner` (the config file, at `init`), claim the database for it."""
    with write_txn(conn):
        if owner is not None and not takeover and sql.STATE in state.installed_tables(conn):
            state.check_owner(conn, owner, taking_over=True)  # before touching another config's capture
        _apply(conn, p, schemas)
        if owner is not None:
            state.claim_owner(conn, owner, takeover)


def _apply(conn: sqlite3.Connection, p: CapturePlan, schemas: Mapping[str, TableSchema]) -> None:
    for stmt in p.statements:
        conn.execute(stmt)
    conn.execute(sql.STATE_INIT, (state.HWM, 0))
    conn.execute(sql.STATE_INIT, (state.VERSION, sql.SCHEMA_VERSION))
    state.save_shapes(conn, {name: s.shape for name, s in schemas.items()}, overwrite=False)
    state.flag_reconcile(conn, p.disarmed)


def init(app: App, dry_run: bool = False, takeover: bool = False, set_aside: bool = False) -> InitResult:
    """`dynasync init`: install capture, then check (or create) the DynamoDB tables.
    With `takeover`, this config replaces the one that set the database up. With
    `set_aside` (the daemon setting up a new database), a table whose mapping does
    not fit is set aside, and the others are set up, rather than none."""
    found = _fitting(app, set_aside)
    schemas = {name: t.schema for name, t in found.items()}
    p = plan(app.conn, schemas)
    if dry_run:
        return InitResult(plan=p)
    if takeover:
        log.warning("taking the database over for this config", extra=fields(config=str(app.config.path)))
    apply(app.conn, p, schemas, owner=app.config.path, takeover=takeover)
    journal = app.conn.execute(sql.JOURNAL_MODE).fetchone()[0]
    if str(journal).lower() != "wal":
        p.warnings.append(
            f"the database uses journal_mode={journal}; WAL is strongly recommended so dynasync's "
            "reads never block the application's writes (PRAGMA journal_mode=WAL)"
        )
    create = app.config.dynamodb.create_tables
    check = provision.ensure_targets(found.values(), app.target, app.retrier(), create)
    with write_txn(app.conn):
        state.record_targets(app.conn, check.identities, provision.sources(found))
    for w in p.warnings:
        log.warning(w)
    return InitResult(plan=p, created_tables=check.created)


@dataclass
class Rearm:
    """The schemas as re-armed, the tables owing a reconcile, the tables that
    cannot be synced now (and why), and the schema cookie they go with."""

    schemas: dict[str, TableSchema]
    disarmed: list[str]
    owed: list[str]  # tables flagged for a reconcile earlier, not yet done
    cookie: int
    failed: dict[str, DynasyncError] = field(default_factory=dict)


def rearm(conn: sqlite3.Connection, config: Config) -> Rearm:
    """Inspect the tables and reinstall capture where it was removed or is out
    of date, in one write transaction: a migration cannot slip between what
    was inspected and the triggers installed, and the cookie read at the end
    is exactly this schema's.

    A configured table that cannot be synced now (dropped or renamed away, its
    filter naming a column a migration dropped) fails alone, in `failed`: a
    missing table loses its triggers, so none is left behind on another
    table; one whose filter no longer fits keeps capture armed, so its changes
    are still logged while it is set aside."""
    with write_txn(conn):
        owed = state.flagged_for_reconcile(conn, [t.source for t in config.tables])
        failed: dict[str, DynasyncError] = {}
        schemas: dict[str, TableSchema] = {}
        for t in config.tables:
            try:
                schemas[t.source] = schema.inspect(conn, t.source)
                if t.where:
                    filters.check_filter(conn, schemas[t.source], t.where)
            except SourceError as e:
                failed[t.source] = e
        p = plan(conn, schemas)
        if p.statements:
            _apply(conn, p, schemas)
            log.warning("capture triggers were missing or outdated; reinstalled them")
        cookie = int(conn.execute(sql.SCHEMA_COOKIE).fetchone()[0])
    return Rearm(schemas, p.disarmed, owed, cookie, failed)


def _fitting(app: App, set_aside: bool) -> dict[str, tables.SyncedTable]:
    """The configured tables; with `set_aside`, only those that fit, the others
    recorded as set aside (and owing a reconcile once they fit)."""
    if not set_aside:
        return tables.load(app.conn, app.config)
    found: dict[str, tables.SyncedTable] = {}
    failed: dict[str, str] = {}
    for entry in app.config.tables:
        try:
            found.update(tables.load(app.conn, app.config, [entry.source]))
        except (DynasyncError, Poison) as e:
            failed[entry.source] = str(e)
    if failed:
        with write_txn(app.conn):  # dynasync's own tables, to keep the tables set aside in
            _apply(app.conn, CapturePlan(list(sql.CREATE_OWN_TABLES)), {})
            state.record_set_aside(app.conn, failed)
            state.flag_reconcile(app.conn, failed)
    return found


def uninstall(app: App) -> list[str]:
    """`dynasync uninstall`: drop every dynasync trigger and table; returns the statements run."""
    conn = app.conn
    if sql.STATE in state.installed_tables(conn):
        state.check_owner(conn, app.config.path)
    statements = [sql.drop_trigger(name) for name, _, _ in conn.execute(sql.LIST_OWN_TRIGGERS)]
    statements.extend(sql.DROP_OWN_TABLES)
    with write_txn(conn):
        for stmt in statements:
            conn.execute(stmt)
    return statements
