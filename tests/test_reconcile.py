"""A reconcile (after a migration, a re-arm, a restored target) is resumable and
taken in bounded steps between passes: the other tables keep syncing while it
runs, status shows how far it got, and a restart resumes it where it stopped."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import Env
from fakes import FakeTarget
from test_cli import DYNASYNC, cli, wait_until
from unit_env import app_conn, make_app

from dynasync import backfill, capture, config, reconcile, state, syncpass
from dynasync.app import App
from dynasync.status import status
from dynasync.values import key_text

T = "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"
OTHER = "CREATE TABLE o (id INTEGER PRIMARY KEY, v TEXT)"


def _steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock that moves one tick each time a reconcile asks it, so a step is a few chunks, exactly."""
    ticks = itertools.count()
    monkeypatch.setattr(reconcile.time, "monotonic", lambda: float(next(ticks)))


def test_a_reconcile_runs_in_steps_and_resumes_while_other_tables_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, fake = make_app(tmp_path, T, OTHER, tables={"t": "target-t", "o": "target-o"})
    c = app_conn(app)
    c.executemany("INSERT INTO t VALUES (?, 'v')", [(i,) for i in range(1000)])
    syncpass.Syncer(app).run_pass()
    c.execute("ALTER TABLE t ADD COLUMN c INTEGER DEFAULT 7")  # every item changes, and no trigger fires
    daemon = syncpass.Syncer(app, stepped=True)
    assert daemon.run_pass().reconciled == []  # the daemon's pass leaves it to the steps
    _steps(monkeypatch)
    done, more = reconcile.run(app, daemon.schema.refresh().tables, until=3.0)
    job = state.reconcile_job(app.conn, "t")
    assert (done, more) == ([], True) and job is not None and job.phase == state.ROWS
    assert 0 < job.rows < 1000 and job.after is not None
    assert status(app).tables["t"].reconcile == {"phase": "rows", "rows": job.rows, "written": job.written,
                                                 "items": 0, "deleted": 0}
    # Another table's change goes through between two steps.
    c.execute("INSERT INTO o VALUES (1, 'meanwhile')")
    daemon.run_pass()
    assert len(fake.items("target-o")) == 1 and state.reconcile_job(app.conn, "t") is not None
    # A new process resumes where the last step stopped, and finishes.
    monkeypatch.undo()
    r = syncpass.Syncer(app).run_pass()
    assert r.reconciled == ["t"] and state.reconcile_job(app.conn, "t") is None
    assert all(item["c"] == {"N": "7"} for item in fake.items("target-t").values())
    assert len(fake.items("target-t")) == 1000


def test_the_item_sweep_never_deletes_an_item_a_pass_wrote_between_two_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE u (id INTEGER PRIMARY KEY, k TEXT)")
    data = {"source": {"database": str(db)}, "dynamodb": {"create_tables": True},
            "tables": [{"source": "u", "target": "target-u", "partition_key": {"name": "PK", "template": "U#{k}"}}]}
    fake = FakeTarget()
    app = App(config.parse(data), lambda _cfg: fake)
    capture.init(app)
    c = app_conn(app)
    c.executemany("INSERT INTO u VALUES (?, ?)", [(i, f"k{i}") for i in range(300)])
    syncpass.Syncer(app).run_pass()
    fake.items("target-u")[key_text({"PK": {"S": "U#ghost"}})] = {"PK": {"S": "U#ghost"}}
    with app.conn:
        app.conn.execute("BEGIN IMMEDIATE")
        state.flag_reconcile(app.conn, ["u"])
    fake.page_size = 20
    daemon = syncpass.Syncer(app, stepped=True)
    _steps(monkeypatch)
    moved = False
    for _ in range(200):
        _, more = reconcile.run(app, daemon.schema.refresh().tables, until=reconcile.time.monotonic() + 3)
        job = state.reconcile_job(app.conn, "u")
        if job is not None and job.phase == state.ITEMS and job.items and not moved:
            # Mid-sweep, rows move to keys the sweep has not reached, and back behind it.
            c.execute("UPDATE u SET k = 'zz-moved' WHERE id = 5")
            c.execute("UPDATE u SET k = 'a-moved' WHERE id = 250")
            daemon.run_pass()
            moved = True
        if not more:
            break
    assert moved and state.reconcile_job(app.conn, "u") is None
    keys = sorted(item["PK"]["S"] for item in fake.items("target-u").values())
    want = sorted(f"U#{k}" for (k,) in c.execute("SELECT k FROM u"))
    assert keys == want  # the ghost is gone, both moved rows kept their new items


def test_the_daemon_keeps_other_tables_flowing_during_a_long_reconcile(env: Env) -> None:
    env.table("t", T)
    env.table("o", OTHER)
    env.write_config(backfill={"max_write_rate": 300.0}, sync={"interval": 0.5})
    cli(env, "init", check=True)
    c = env.app_conn()
    c.execute("BEGIN")
    c.executemany("INSERT INTO t VALUES (?, 'v')", [(i,) for i in range(3000)])
    c.execute("COMMIT")
    c.close()  # this process's lock (backfill's) must not outlive a connection of its own: see lock.py
    env.run(backfill.backfill)
    c = env.app_conn()
    c.execute("ALTER TABLE t ADD COLUMN c INTEGER DEFAULT 7")  # 3,000 items to rewrite at 300 units/s
    daemon = subprocess.Popen([DYNASYNC, "run", "--config", str(env.config_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (_status(env)["tables"]["t"]["reconcile"] or {}).get("written", 0) > 0)
        for n in range(3):
            c.execute("INSERT INTO o VALUES (?, 'during the reconcile')", (n,))
            wait_until(lambda n=n: len(env.items("o")) == n + 1, timeout=10)
        # Every change of o landed while t's reconcile was still under way.
        assert _status(env)["tables"]["t"]["reconcile"] is not None
        wait_until(lambda: _status(env)["tables"]["t"]["reconcile"] is None, timeout=120)
    finally:
        daemon.terminate()
        _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    assert "level=error" not in err, err
    assert all(i["c"] == {"N": "7"} for i in env.items("t")) and len(env.items("t")) == 3000


def _status(env: Env) -> dict[str, object]:
    out: dict[str, object] = json.loads(cli(env, "status", "--json").stdout)
    return out


def test_a_target_deleted_during_a_reconcile_is_recreated_and_restored_at_the_next_turn(tmp_path: Path) -> None:
    from dynasync.exceptions import TableMissingError
    from dynasync.member import Member

    app, fake = make_app(tmp_path, T)
    c = app_conn(app)
    c.executemany("INSERT INTO t VALUES (?, 'v')", [(i,) for i in range(500)])
    syncpass.Syncer(app).run_pass()
    state.start_backfill(app.conn, ["t"])
    state.finish_backfill(app.conn, "t", [])
    c.execute("ALTER TABLE t ADD COLUMN c INTEGER DEFAULT 7")  # a reconcile owed
    app.close()
    m = Member(app.config.database, app.config, app, lambda: None)

    def deleted(_: object) -> int:  # an operator mistake while the reconcile writes
        del fake.tables["target-t"]
        fake.fault = None
        raise TableMissingError("DynamoDB table 'target-t' does not exist", "target-t")

    fake.fault = deleted
    m.turn()
    assert m.health == "failing" and "does not exist" in (m.error or "")
    assert state.missing_targets(m.app.conn)  # status names it
    m.retry_at = 0.0
    for _ in range(10):  # the next turn checks the targets at once, recreates and restores
        m.retry_at = 0.0
        m.turn()
    assert m.health == "healthy", m.error
    assert len(fake.items("target-t")) == 500 and all(i["c"] == {"N": "7"} for i in fake.items("target-t").values())
    m.close()
