"""Install, check and remove capture: dynasync's own tables and the triggers
on every configured table."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dynasync import provision, sql, state, tables
from dynasync.app import App
from dynasync.database import write_txn
from dynasync.schema import TableSchema

log = logging.getLogger(__name__)


@dataclass
class CapturePlan:
    """The SQL that brings capture up to date, and what it found on the way."""

    statements: list[str] = field(default_factory=list)
    # Tables whose capture was missing or out of date: changes may have gone uncaptured.
    disarmed: list[str] = field(default_factory=list)
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
    for name, schema in schemas.items():
        triggers = sql.trigger_sql(schema.trigger_spec)
        wanted.update(triggers)
        # Capture that is missing, attached to another table (renamed away by a
        # migration) or out of date (a new UNIQUE index) may have missed changes.
        armed = all(
            n in existing and existing[n][0].lower() == name.lower() and existing[n][1] == text
            for n, text in triggers.items()
        )
        if sql.STATE in present and not armed:
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
    conn: sqlite3.Connection, p: CapturePlan, schemas: Mapping[str, TableSchema], owner: Path | None = None
) -> None:
    """Run a plan in one transaction; flag disarmed tables for reconciling.
    With `owner` (the config file, at `init`), claim the database for it."""
    with write_txn(conn):
        if owner is not None and sql.STATE in state.installed_tables(conn):
            state.check_owner(conn, owner, taking_over=True)  # before touching another config's capture
        for stmt in p.statements:
            conn.execute(stmt)
        conn.execute(sql.STATE_INIT, (state.HWM, 0))
        conn.execute(sql.STATE_INIT, (state.VERSION, sql.SCHEMA_VERSION))
        state.save_shapes(conn, {name: s.shape for name, s in schemas.items()}, overwrite=False)
        state.flag_reconcile(conn, p.disarmed)
        if owner is not None:
            state.claim_owner(conn, owner)


def init(app: App, dry_run: bool = False) -> InitResult:
    """`dynasync init`: install capture, then check (or create) the DynamoDB tables."""
    found = tables.load(app.conn, app.config)
    schemas = {name: t.schema for name, t in found.items()}
    p = plan(app.conn, schemas)
    if dry_run:
        return InitResult(plan=p)
    apply(app.conn, p, schemas, owner=app.config.path)
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


def rearm(conn: sqlite3.Connection, schemas: Mapping[str, TableSchema]) -> list[str]:
    """Reinstall capture where it was removed or is out of date (a table
    rebuilt by a migration loses its triggers). Returns the tables that were
    left without row triggers, which need reconciling."""
    p = plan(conn, schemas)
    if p.statements:
        apply(conn, p, schemas)
        log.warning("capture triggers were missing or outdated; reinstalled them")
    return p.disarmed


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
