"""What `dynasync status` reports: position, backlog, dead letters, backfill
progress and whether a daemon holds the database."""

from __future__ import annotations

import fcntl
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from dynasync import changelog, state
from dynasync import triggers as sql
from dynasync.app import App
from dynasync.database import read_txn
from dynasync.lock import lock_path


@dataclass
class TableStatus:
    pending: int = 0
    dead_letters: int = 0
    backfill: str = "not started"
    backfill_rows: int = 0


@dataclass
class Status:
    database: str
    installed: bool
    running: bool
    high_water_mark: int = 0
    last_seq: int = 0
    pending_changes: int = 0
    dead_letters: int = 0
    tables: dict[str, TableStatus] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def daemon_running(app: App) -> bool:
    path = lock_path(app.config.database)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def status(app: App) -> Status:
    conn = app.conn
    result = Status(database=str(app.config.database), installed=False, running=daemon_running(app))
    for t in app.config.tables:
        result.tables[t.source] = TableStatus()
    with read_txn(conn):
        if not state.installed_tables(conn) >= set(sql.OWN_TABLES):
            return result
        result.installed = True
        hwm = state.high_water_mark(conn)
        result.high_water_mark = hwm
        result.last_seq = changelog.last_seq(conn)
        for table, n in conn.execute(sql.CHANGELOG_PENDING_BY_TABLE, (hwm,)):
            if table in result.tables:
                result.tables[table].pending = n
            result.pending_changes += n if table else 0
        for table, n in conn.execute(sql.DEAD_COUNT_BY_TABLE):
            result.tables.setdefault(table, TableStatus()).dead_letters = n
            result.dead_letters += n
        for table, _k1, _k2, started, rows, done in conn.execute(sql.BACKFILL_GET):
            if table in result.tables:
                ts = result.tables[table]
                ts.backfill = "done" if done else "in progress" if started else "starting"
                ts.backfill_rows = rows
    return result
