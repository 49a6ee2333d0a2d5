"""The health verdict of `dynasync status` and the exit codes of --check."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import Env
from test_cli import cli
from unit_env import app_conn, make_app

from dynasync import sql, status, syncpass

DDL = "CREATE TABLE t (id INTEGER PRIMARY KEY, v)"


def test_verdicts(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, DDL)
    c = app_conn(app)
    s = status.status(app)
    assert (s.exit_code, s.lag_seconds) == (status.WARNING, 0.0)
    assert s.problems == ["no daemon is running on this database"]
    c.execute("INSERT INTO t VALUES (1, 'a')")
    s = status.status(app)
    assert s.exit_code == status.WARNING and s.lag_seconds is None
    assert "no pass has applied anything yet" in s.problems[0]
    syncpass.Syncer(app).run_pass()
    s = status.status(app)
    assert s.lag_seconds == 0 and s.last_pass is not None and s.tables["t"].last_applied is not None
    c.execute("INSERT INTO t VALUES (2, 'b')")
    c.execute("UPDATE _dynasync_state SET value = ? WHERE name = 'last_pass_at'", (time.time() - 1000,))
    c.execute("UPDATE _dynasync_state SET value = ? WHERE name = 'applied_at:t'", (time.time() - 1000,))
    s = status.status(app, max_lag=300)
    assert s.exit_code == status.CRITICAL and s.health == "critical"
    assert s.lag_seconds is not None and 999 < s.lag_seconds < 1100
    assert s.tables["t"].lag_seconds is not None and s.tables["t"].lag_seconds > 999
    assert status.status(app, max_lag=5000).exit_code == status.WARNING
    c.execute("INSERT INTO t VALUES (3, 1e308)")
    syncpass.Syncer(app).run_pass()
    s = status.status(app)
    assert s.dead_letters == 1 and any("dead letter" in p for p in s.problems)
    for stmt in sql.DROP_OWN_TABLES:
        c.execute(stmt)
    s = status.status(app)
    assert (s.installed, s.exit_code) == (False, status.CRITICAL)


def test_status_check_exit_codes(env: Env) -> None:
    env.table("t", DDL)
    p = cli(env, "status", "--check")
    assert p.returncode == 2 and "CRITICAL" in p.stdout and "dynasync init" in p.stdout
    assert cli(env, "status").returncode == 0  # without --check, status always exits 0
    cli(env, "init", check=True)
    p = cli(env, "status", "--check", "--json")
    doc = json.loads(p.stdout)
    assert p.returncode == 1 and doc["health"] == "warning" and doc["exit_code"] == 1
    assert isinstance(doc["pending_changes"], int) and isinstance(doc["high_water_mark"], int)
    assert "lag" in cli(env, "status").stdout
