"""What `dynasync status` reports: position, backlog, dead letters, backfill
progress, whether a daemon holds the database, and a health verdict.

Lag, here, is how long changes have been waiting: 0 with nothing pending,
otherwise the time since dynasync last moved its mark (or, for one table,
since that table's changes last landed).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from dynasync import changelog, objects, sql, state
from dynasync.app import App
from dynasync.database import read_txn
from dynasync.lock import is_held

OK, WARNING, CRITICAL = 0, 1, 2  # `status --check` exit codes, as monitoring probes read them
DEFAULT_MAX_LAG = 300.0


@dataclass
class TableStatus:
    """One source table's backlog, dead letters, lag and backfill."""

    pending: int = 0
    dead_letters: int = 0
    last_applied: float | None = None
    lag_seconds: float | None = 0.0
    backfill: str = "not started"
    backfill_rows: int = 0
    set_aside: str | None = None  # why the table cannot be synced now; None while it syncs
    reconcile: dict[str, Any] | None = None  # a reconcile under way: its phase and counts


@dataclass
class Status:
    """What `dynasync status` reports, with its verdict."""

    database: str
    installed: bool
    running: bool
    high_water_mark: int = 0
    last_seq: int = 0
    pending_changes: int = 0
    dead_letters: int = 0
    last_pass: float | None = None
    lag_seconds: float | None = 0.0
    health: str = "healthy"
    problems: list[str] = field(default_factory=list)
    exit_code: int = OK
    tables: dict[str, TableStatus] = field(default_factory=dict)
    missing_targets: list[str] = field(default_factory=list)  # DynamoDB tables found missing
    failing: str | None = None  # why the daemon's turns on this database fail, while they do
    failing_since: float | None = None
    # The last time the file was found not to be the one synced last (restored, replaced), and why.
    identity_change: str | None = None
    identity_change_at: float | None = None
    verify_cycle_ended_at: float | None = None  # continuous verification's last full cycle
    # The "s3" oversize policy: objects recorded (pointed to, or about to be deleted), and items
    # whose objects are still to be compared with them (a number that keeps growing: S3 refuses deletes).
    s3_objects: int = 0
    s3_items_to_clean: int = 0

    def to_json(self) -> dict[str, Any]:
        """The fields of `status --json`."""
        return asdict(self)


def _lag(pending: int, since: float | None, now: float) -> float | None:
    """None: changes are pending and dynasync has never applied any."""
    if not pending:
        return 0.0
    return round(now - since, 3) if since is not None else None


def status(app: App, max_lag: float = DEFAULT_MAX_LAG) -> Status:
    """Read the position and backlog (without the lock) and judge health."""
    # Before opening the connection: see lock.py on closing descriptors.
    running = is_held(app.config.database)
    conn = app.conn
    now = time.time()
    result = Status(database=str(app.config.database), installed=False, running=running)
    for t in app.config.tables:
        result.tables[t.source] = TableStatus()
    with read_txn(conn):
        if not state.installed_tables(conn) >= set(sql.OWN_TABLES):
            result.health, result.exit_code = "critical", CRITICAL
            result.problems.append("dynasync is not installed: run 'dynasync init'")
            return result
        result.installed = True
        hwm = state.high_water_mark(conn)
        result.high_water_mark = hwm
        result.last_seq = changelog.last_seq(conn)
        result.last_pass = state.timestamp(conn, state.LAST_PASS)
        for table, n in conn.execute(sql.CHANGELOG_PENDING_BY_TABLE, (hwm,)):
            result.tables.setdefault(table, TableStatus()).pending = n
            result.pending_changes += n
        for table, n in conn.execute(sql.DEAD_COUNT_BY_TABLE):
            result.tables.setdefault(table, TableStatus()).dead_letters = n
            result.dead_letters += n
        for table, progress in state.backfill_progress(conn).items():
            ts = result.tables.setdefault(table, TableStatus())
            ts.backfill = "done" if progress.done else "in progress"
            ts.backfill_rows = progress.rows
        for table, ts in result.tables.items():
            ts.last_applied = state.timestamp(conn, state.APPLIED_AT + table)
            ts.lag_seconds = _lag(ts.pending, ts.last_applied or result.last_pass, now)
        result.missing_targets = sorted(state.missing_targets(conn))
        for table, ts in result.tables.items():
            job = state.reconcile_job(conn, table)
            if job is not None:
                ts.reconcile = {"phase": job.phase, "rows": job.rows, "written": job.written,
                                "items": job.items, "deleted": job.deleted}
        for table, reason in state.set_aside(conn).items():
            if table in result.tables:
                result.tables[table].set_aside = reason
        result.verify_cycle_ended_at = state.timestamp(conn, state.AUDIT_CYCLE)
        change = state.identity_change(conn)
        if change is not None:
            result.identity_change, result.identity_change_at = change
        if objects.present(conn):
            result.s3_objects, result.s3_items_to_clean = conn.execute(sql.OBJECTS_COUNTS).fetchone()
        failure = state.failure(conn)
        if failure is not None:
            result.failing, result.failing_since = failure.error, failure.since
    result.lag_seconds = _lag(result.pending_changes, result.last_pass, now)
    _judge(result, max_lag)
    return result


def _judge(s: Status, max_lag: float) -> None:
    if s.failing is not None:
        since = f" for {time.time() - s.failing_since:.0f}s" if s.failing_since else ""
        s.problems.append(f"the daemon's passes on this database are failing{since}: {s.failing}")
        s.exit_code = CRITICAL
    for name, t in s.tables.items():
        if t.set_aside is not None:
            s.problems.append(f"table {name!r} is set aside (the other tables go on): {t.set_aside}")
            s.exit_code = CRITICAL
    for target in s.missing_targets:
        s.problems.append(
            f"DynamoDB table {target!r} does not exist: its items are lost until it exists again "
            "(create it, or set create_tables = true); dynasync then restores it"
        )
        s.exit_code = CRITICAL
    if s.lag_seconds is None:
        s.problems.append(f"{s.pending_changes} change(s) pending and no pass has applied anything yet")
        s.exit_code = WARNING
    elif s.lag_seconds > max_lag:
        s.problems.append(
            f"{s.pending_changes} change(s) pending and no progress for {s.lag_seconds:.0f}s "
            f"(limit {max_lag:g}s)"
        )
        s.exit_code = CRITICAL
    if s.dead_letters:
        s.problems.append(f"{s.dead_letters} dead letter(s): see 'dynasync dead-letters'")
        s.exit_code = max(s.exit_code, WARNING)
    if not s.running:
        s.problems.append("no daemon is running on this database")
        s.exit_code = max(s.exit_code, WARNING)
    s.health = {OK: "healthy", WARNING: "warning", CRITICAL: "critical"}[s.exit_code]
