"""The real `dynasync` executable in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import Env

DYNASYNC = str(Path(sys.executable).parent / "dynasync")


def cli(e: Env, *args: str, check: bool = False, **kw: Any) -> subprocess.CompletedProcess[str]:
    cmd = [DYNASYNC, *args]
    if "--no-config" not in args:
        cmd += ["--config", str(e.config_path)]
    else:
        cmd.remove("--no-config")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_full_lifecycle(env: Env) -> None:
    env.table("users", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    env.sql("INSERT INTO users VALUES (1, 'ann')")
    assert "applied" in cli(env, "init", check=True).stdout
    assert "already up to date" in cli(env, "init", check=True).stdout
    assert "1 row(s) copied" in cli(env, "backfill", check=True).stdout
    env.sql("INSERT INTO users VALUES (2, 'bob')", "UPDATE users SET name = 'ANN' WHERE id = 1")
    st = json.loads(cli(env, "status", "--json", check=True).stdout)
    assert st["pending_changes"] == 2 and st["dead_letters"] == 0 and st["high_water_mark"] == 0
    assert "2 change(s)" in cli(env, "sync", check=True).stdout
    st = json.loads(cli(env, "status", "--json", check=True).stdout)
    assert (st["pending_changes"], st["high_water_mark"]) == (0, 2)
    assert "pending changes: 0" in cli(env, "status", check=True).stdout
    assert cli(env, "verify").returncode == 0
    env.client.delete_item(TableName=env.tables["users"], Key={"id": {"N": "2"}})
    p = cli(env, "verify")
    assert p.returncode == 1 and "missing 1" in p.stdout
    assert cli(env, "verify", "--repair").returncode == 0
    assert cli(env, "verify").returncode == 0
    assert cli(env, "uninstall", check=True).returncode == 0
    assert env.rows("SELECT count(*) FROM sqlite_master WHERE name LIKE '_dynasync%'") == [(0,)]


def test_dry_run_prints_sql_and_changes_nothing(env: Env) -> None:
    env.table("users", "CREATE TABLE users (id INTEGER PRIMARY KEY)")
    p = cli(env, "init", "--dry-run", check=True)
    assert 'CREATE TRIGGER "_dynasync_ins_users"' in p.stdout
    assert env.rows("SELECT count(*) FROM sqlite_master WHERE name LIKE '_dynasync%'") == [(0,)]


def test_config_from_environment_then_cwd(env: Env) -> None:
    env.table("users", "CREATE TABLE users (id INTEGER PRIMARY KEY)")
    p = cli(env, "status", "--no-config", env={**os.environ, "DYNASYNC_CONFIG": str(env.config_path)})
    assert p.returncode == 0 and str(env.db_path) in p.stdout
    (env.dir / "dynasync.toml").write_text(env.config_path.read_text())
    p = cli(env, "status", "--no-config", cwd=env.dir)
    assert p.returncode == 0


def test_errors_are_one_line_without_traceback(env: Env) -> None:
    env.table("users", "CREATE TABLE users (id INTEGER PRIMARY KEY)")
    env.db_path.unlink()
    p = cli(env, "sync")
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0] and str(env.db_path) in lines[0]
    assert not env.db_path.exists()
    p = cli(env, "sync", "--verbose")
    assert "Traceback" in p.stderr
    p = cli(env, "status", "--no-config", "--config", str(env.dir / "nope.toml"))
    assert p.returncode != 0 and p.stderr.count("\n") == 1 and "nope.toml" in p.stderr


def test_unknown_table_and_bad_config_name_the_problem(env: Env) -> None:
    env.table("ghost")
    p = cli(env, "init")
    assert p.returncode != 0 and "'ghost' does not exist" in p.stderr and "Traceback" not in p.stderr
    env.write_config(sync={"bogus": 1})
    p = cli(env, "status")
    assert p.returncode != 0 and "bogus" in p.stderr


def test_run_daemon_syncs_and_stops_on_sigterm(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    env.write_config(sync={"interval": 30.0})  # only the file watcher can make this fast
    cli(env, "init", check=True)
    daemon = subprocess.Popen([DYNASYNC, "run", "--config", str(env.config_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: json.loads(cli(env, "status", "--json").stdout)["running"])
        second = cli(env, "sync")
        assert second.returncode != 0 and "another dynasync instance is running" in second.stderr
        env.sql("INSERT INTO t VALUES (1, 'a')")
        wait_until(lambda: len(env.items("t")) == 1, timeout=10)
        env.sql("UPDATE t SET v = 'b' WHERE id = 1")
        wait_until(lambda: env.items("t")[0]["v"]["S"] == "b", timeout=10)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    assert "SIGTERM" in err
    # The lock died with the process.
    assert cli(env, "sync").returncode == 0


def test_sync_against_unreachable_dynamodb_fails_in_bounded_time(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    cli(env, "init", check=True)
    env.sql("INSERT INTO t VALUES (1)")
    from ddblocal import free_port

    env.write_config(endpoint=f"http://127.0.0.1:{free_port()}",
                     dynamodb={"max_retry_time": 2.0, "connect_timeout": 1.0})
    start = time.monotonic()
    p = cli(env, "sync")
    assert p.returncode != 0 and time.monotonic() - start < 30
    assert len(p.stderr.strip().splitlines()) == 1
    env.write_config(endpoint=env.endpoint)
    assert json.loads(cli(env, "status", "--json").stdout)["pending_changes"] == 1
    cli(env, "sync", check=True)
    assert len(env.items("t")) == 1


def test_python_dash_m(env: Env) -> None:
    p = subprocess.run([sys.executable, "-m", "dynasync", "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("dynasync ")


def test_backfill_progress_bar_only_on_a_terminal(env: Env) -> None:
    import pty

    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v REAL)")
    env.write_config(backfill={"chunk_size": 100})
    env.sql("WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 500) "
            "INSERT INTO t (id) SELECT x FROM s")
    cli(env, "init", check=True)
    piped = cli(env, "backfill", check=True)
    assert "[" not in piped.stderr and "rows" not in piped.stderr

    def in_terminal(*args: str) -> tuple[int, str]:
        leader, follower = pty.openpty()
        p = subprocess.Popen([DYNASYNC, *args, "--config", str(env.config_path)],
                             stdin=follower, stdout=follower, stderr=follower)
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        p.wait(60)
        os.close(leader)
        return p.returncode, out.decode(errors="replace")

    rc, text = in_terminal("backfill")
    assert rc == 0 and "500/500 rows" in text and "#" * 30 in text, text
    assert "rows/s" in text and "ETA" in text, text
    rc, text = in_terminal("verify")
    assert rc == 0 and "verify t: [" in text and "500/500 rows" in text and "rows/s" in text, text
    env.sql("UPDATE t SET id = id + 1000")
    rc, text = in_terminal("sync")
    assert rc == 0 and "sync changelog: [" in text and "1000/1000 changes" in text, text
    env.sql("INSERT INTO t VALUES (5000, 1e400)")  # inf: DynamoDB can never hold it, a dead letter
    cli(env, "sync", check=True)
    rc, text = in_terminal("dead-letters", "--retry")
    assert rc == 0 and "retry changelog: [" in text and "1/1 changes" in text, text
    assert "queued 1 row(s) again" in text, text


def test_config_check(env: Env) -> None:
    env.table("users", "CREATE TABLE users (id INTEGER PRIMARY KEY)")
    p = cli(env, "config", "check")
    assert p.returncode == 0 and "is valid" in p.stdout
    env.write_config(sync={"interval": -1, "watch": "no"})
    p = cli(env, "config", "check")
    assert p.returncode == 1
    assert "[sync] interval must be positive" in p.stdout and "[sync] watch must be true or false" in p.stdout
    assert "2 problem(s)" in p.stdout


def test_run_logs_one_json_object_per_line(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, secret TEXT)")
    env.write_config(sync={"interval": 0.2})
    cli(env, "init", check=True)
    daemon = subprocess.Popen([DYNASYNC, "run", "--log-format", "json", "--config", str(env.config_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        env.sql("INSERT INTO t VALUES (1, 'hunter2')")
        wait_until(lambda: len(env.items("t")) == 1)
        time.sleep(0.5)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    events = [json.loads(line) for line in err.splitlines()]
    assert events[0]["event"] == "running"
    passes = [e for e in events if e["event"] == "pass"]
    assert passes and passes[0]["changes"] == 1 and passes[0]["level"] == "info"
    assert events[-1]["event"] == "stopped"
    assert "hunter2" not in err and "testing" not in err  # no row contents, no credentials
