"""Install, check and remove capture: dynasync's own tables and the triggers
on every configured table."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field

from dynasync import sql, state, tables
from dynasync.app import App
from dynasync.database import write_txn
from dynasync.schema import TableSchema

log = logging.getLogger(__name__)

CORE_TRIGGERS = ("ins", "upd", "key", "del")


@dataclass
class CapturePlan:
    """The SQL that brings capture up to date, and what it found on the way."""

    statements: list[str] = field(default_factory=list)
    # Tables whose row triggers were missing: changes may have gone uncaptured.
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
    result.statements.extend(
        stmt for stmt, table in zip(sql.CREATE_OWN_TABLES[:4], sql.OWN_TABLES, strict=True)
        if table not in present
    )
    if sql.DEAD_LETTERS not in present:
        result.statements.append(sql.CREATE_OWN_TABLES[4])
    existing = {name: text for name, _, text in conn.execute(sql.LIST_OWN_TRIGGERS)}
    wanted: dict[str, str] = {}
    for name, schema in schemas.items():
        wanted.update(sql.trigger_sql(schema.trigger_spec))
        if sql.STATE in present and any(sql.trigger_name(k, name) not in existing for k in CORE_TRIGGERS):
            result.disarmed.append(name)
            result.warnings.append(
                f"table {name!r} had no capture triggers (a migration that rebuilds a table drops them); "
                "changes made meanwhile were not captured: run 'dynasync verify --repair'"
            )
        for index in schema.skipped_indexes:
            result.warnings.append(
                f"table {name!r}: expression index {index!r} is not followed; a REPLACE that deletes a "
                "row through it is not captured"
            )
    for name, text in sorted(existing.items()):
        if wanted.get(name) != text:
            result.statements.append(sql.drop_trigger(name))
    for name, text in wanted.items():
        if existing.get(name) != text:
            result.statements.append(text)
    return result


def apply(conn: sqlite3.Connection, p: CapturePlan, schemas: Mapping[str, TableSchema]) -> None:
    """Run a plan in one transaction; flag disarmed tables for reconciling."""
    with write_txn(conn):
        for stmt in p.statements:
            conn.execute(stmt)
        conn.execute(sql.STATE_INIT, (state.HWM, 0))
        conn.execute(sql.STATE_INIT, (state.VERSION, sql.SCHEMA_VERSION))
        state.save_shapes(conn, {name: s.shape for name, s in schemas.items()}, overwrite=False)
        state.flag_reconcile(conn, p.disarmed)


def init(app: App, dry_run: bool = False) -> InitResult:
    """`dynasync init`: install capture, then check (or create) the DynamoDB tables."""
    found = tables.load(app.conn, app.config)
    schemas = {name: t.schema for name, t in found.items()}
    p = plan(app.conn, schemas)
    if dry_run:
        return InitResult(plan=p)
    apply(app.conn, p, schemas)
    journal = app.conn.execute(sql.JOURNAL_MODE).fetchone()[0]
    if str(journal).lower() != "wal":
        p.warnings.append(
            f"the database uses journal_mode={journal}; WAL is strongly recommended so dynasync's "
            "reads never block the application's writes (PRAGMA journal_mode=WAL)"
        )
    created = tables.ensure_targets(
        found.values(), app.target, app.retrier(), create=app.config.dynamodb.create_tables
    )
    for w in p.warnings:
        log.warning(w)
    return InitResult(plan=p, created_tables=created)


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
    statements = [sql.drop_trigger(name) for name, _, _ in conn.execute(sql.LIST_OWN_TRIGGERS)]
    statements.extend(sql.DROP_OWN_TABLES)
    with write_txn(conn):
        for stmt in statements:
            conn.execute(stmt)
    return statements
