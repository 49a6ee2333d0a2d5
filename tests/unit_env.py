"""A real SQLite database with dynasync installed, against the fake target."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fakes import FakeTarget

from dynasync import capture, config
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
