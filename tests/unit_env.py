"""A real SQLite database with dynasync installed, against the fake target."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from fakes import FakeTarget

from dynasync import capture, config, syncpass
from dynasync.app import App


def make_app(tmp_path: Path, *ddl: str, tables: dict[str, str] | None = None, **sync: object) -> tuple[App, FakeTarget]:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for stmt in ddl:
        conn.execute(stmt)
    conn.close()
    tables = tables or {"t": "target-t"}
    data = {
        "source": {"database": str(db)},
        "dynamodb": {"create_tables": True, "max_retry_time": 2.0},
        "sync": dict(sync),
        "tables": [{"source": s, "target": t} for s, t in tables.items()],
    }
    fake = FakeTarget()
    app = App(config.parse(data), lambda _cfg: fake)
    capture.init(app)
    return app, fake


def app_conn(app: App) -> sqlite3.Connection:
    return sqlite3.connect(app.config.database, isolation_level=None, timeout=5)


def synced_then_restored(app: App, rows: int) -> None:
    """`rows` rows synced, a backup taken, then updates, deletes and inserts synced too; then,
    dynasync stopped, the backup restored over the database (an older copy of it)."""
    c = app_conn(app)
    c.executemany("INSERT INTO t VALUES (?, 'first')", [(i,) for i in range(rows)])
    syncpass.Syncer(app).run_pass()
    backup = app.config.database.with_name("backup.db")
    b = sqlite3.connect(backup)
    c.backup(b)
    b.close()  # closed, so the copy is whole in its one file
    c.execute("UPDATE t SET v = 'later' WHERE id < ?", (rows // 3,))
    c.execute("DELETE FROM t WHERE id >= ?", (rows * 4 // 5,))
    c.executemany("INSERT INTO t VALUES (?, 'later')", [(i,) for i in range(rows, rows + rows // 5)])
    syncpass.Syncer(app).run_pass()
    c.close()
    app.close()
    for side in ("-wal", "-shm"):
        Path(f"{app.config.database}{side}").unlink(missing_ok=True)
    os.replace(backup, app.config.database)
