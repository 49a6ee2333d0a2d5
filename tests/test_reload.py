"""`dynasync run` reloads its config on SIGHUP, adds and removes
tables live, and copies new tables in the background while the others sync."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from conftest import Env
from equality import assert_in_sync
from test_cli import DYNASYNC, cli, wait_until

from dynasync import backfill, capture, syncpass


def daemon_log(env: Env) -> Path:
    """Where the daemon of `start` logs: a file, so a test can wait for a line while it runs."""
    return env.dir / "daemon.log"


def start(env: Env) -> subprocess.Popen[str]:
    with daemon_log(env).open("w") as log:
        daemon = subprocess.Popen([DYNASYNC, "run", "--config", str(env.config_path)],
                                  stdout=subprocess.PIPE, stderr=log, text=True)
    wait_until(lambda: json.loads(cli(env, "status", "--json").stdout)["running"])
    return daemon


def stop(env: Env, daemon: subprocess.Popen[str]) -> str:
    daemon.send_signal(signal.SIGTERM)
    daemon.communicate(timeout=60)
    err = daemon_log(env).read_text()
    assert daemon.returncode == 0, err
    return err


def status(env: Env) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cli(env, "status", "--json").stdout)
    return out


class Churn:
    """Random inserts, updates and deletes on some tables, from another thread."""

    def __init__(self, env: Env, tables: list[str]) -> None:
        self.env, self.tables = env, tables
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.writes = 0

    def _run(self) -> None:
        rng = random.Random(7)
        conn = self.env.app_conn()
        while not self.stop.is_set():
            t = rng.choice(self.tables)
            k = rng.randrange(300)
            op = rng.random()
            if op < 0.5:
                conn.execute(f"INSERT OR REPLACE INTO {t} VALUES (?, ?)", (k, f"v{rng.random()}"))
            elif op < 0.8:
                conn.execute(f"UPDATE {t} SET v = ? WHERE id = ?", (f"u{rng.random()}", k))
            else:
                conn.execute(f"DELETE FROM {t} WHERE id = ?", (k,))
            self.writes += 1
            time.sleep(0.002)
        conn.close()

    def __enter__(self) -> Churn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_reload_adds_and_removes_tables_while_churn_runs(env: Env) -> None:
    for name in ("a", "b", "c"):
        env.table(name, f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v TEXT)")
    env.sql("WITH RECURSIVE n(i) AS (SELECT 1000 UNION ALL SELECT i + 1 FROM n WHERE i < 5999) "
            "INSERT INTO c SELECT i, 'old' FROM n")
    c_target = env.tables.pop("c")
    env.write_config(sync={"interval": 0.5})
    cli(env, "init", check=True)
    cli(env, "backfill", check=True)
    daemon = start(env)
    try:
        with Churn(env, ["a", "b", "c"]):
            time.sleep(1.0)
            env.tables["c"] = c_target  # c joins, b leaves
            b_target = env.tables.pop("b")
            env.write_config()
            daemon.send_signal(signal.SIGHUP)
            wait_until(lambda: status(env)["tables"].get("c", {}).get("backfill") == "done", timeout=60)
            time.sleep(1.0)
        wait_until(lambda: status(env)["pending_changes"] == 0, timeout=30)
        # Capture on b is gone; what b's item held stays in DynamoDB.
        triggers = env.rows("SELECT tbl_name FROM sqlite_master WHERE type = 'trigger'")
        assert ("b",) not in triggers and ("a",) in triggers and ("c",) in triggers
        assert env.client.scan(TableName=b_target, Select="COUNT")["Count"] > 0
    finally:
        err = stop(env, daemon)
    assert "reloaded the config" in err and "table removed from the config" in err
    assert_in_sync(env, "a")
    assert_in_sync(env, "c")
    assert status(env)["dead_letters"] == 0


def test_an_invalid_config_on_reload_keeps_the_old_one_running(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    env.write_config(sync={"interval": 0.5})
    cli(env, "init", check=True)
    good = env.config_path.read_text()
    daemon = start(env)
    try:
        for n, bad in enumerate(("[source\n", good + '\n[[tables]]\nsource = "nope"\ntarget = "nope-table"\n',
                    good.replace('source = "t"', 'source = "t"\ncolumns = ["missing"]')), start=1):
            env.config_path.write_text(bad)
            daemon.send_signal(signal.SIGHUP)
            # One refusal per SIGHUP: the next bad config is written only once this
            # one was refused (two SIGHUPs before a reload are one reload).
            wait_until(lambda n=n: daemon_log(env).read_text().count("reload refused") == n, timeout=30)
            env.sql(f"INSERT INTO t VALUES ({n}, 'still syncing')")
            wait_until(lambda n=n: any(i["id"]["N"] == str(n) for i in env.items("t")), timeout=15)
        assert daemon.poll() is None
    finally:
        env.config_path.write_text(good)
        err = stop(env, daemon)
    assert err.count("reload refused") == 3, err
    assert "nope" in err and "missing" in err


def test_a_table_added_on_reload_is_copied_while_the_others_keep_their_lag(env: Env) -> None:
    env.table("live", "CREATE TABLE live (id INTEGER PRIMARY KEY, v TEXT)")
    big = env.table("big", "CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT)")
    env.sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
            "INSERT INTO big SELECT i, printf('%0100d', i) FROM n")
    env.tables.pop("big")
    # The copy writes within its own budget: 20,000 rows take some 10 s.
    env.write_config(sync={"interval": 0.5}, backfill={"chunk_size": 200, "max_write_rate": 2000.0})
    env.run(capture.init)
    env.run(backfill.backfill)
    daemon = start(env)
    try:
        env.tables["big"] = big
        env.write_config()
        daemon.send_signal(signal.SIGHUP)
        wait_until(lambda: status(env)["tables"].get("big", {}).get("backfill") == "in progress", timeout=20)
        for i in range(10):  # the live table, while big is copied
            env.sql(f"INSERT INTO live VALUES ({i}, 'x')")
            wait_until(lambda i=i: any(x["id"]["N"] == str(i) for x in env.items("live")), timeout=10)
        copying = status(env)["tables"]["big"]["backfill"]
        wait_until(lambda: status(env)["tables"]["big"]["backfill"] == "done", timeout=120)
    finally:
        stop(env, daemon)
    # Every live write landed while big was still being copied: not after the copy.
    assert copying == "in progress", "the copy ended before the live writes: make the table bigger"
    assert env.run(syncpass.sync).entries == 0
    assert_in_sync(env, "big")


def test_a_migration_dropping_a_filter_column_sets_that_table_aside_until_the_config_is_fixed(env: Env) -> None:
    """The other tables go on meanwhile; the table set aside resumes, reconciled,
    once a reload gives it a mapping that fits; `run` never stops."""
    env.table("docs", "CREATE TABLE docs (id INTEGER PRIMARY KEY, v TEXT, deleted_at TEXT)")
    env.table("notes", "CREATE TABLE notes (id INTEGER PRIMARY KEY, v TEXT)")
    env.options["docs"] = {"where": "deleted_at IS NULL"}
    env.write_config()
    env.run(capture.init)
    env.sql("INSERT INTO docs VALUES (1, 'a', NULL), (2, 'b', 'gone'), (3, 'c', NULL)")
    daemon = start(env)
    try:
        wait_until(lambda: len(env.items("docs")) == 2)
        env.sql("ALTER TABLE docs DROP COLUMN deleted_at")  # the filter's column goes
        wait_until(lambda: (status(env)["tables"]["docs"]["set_aside"] or "").find("deleted_at") >= 0)
        st = status(env)
        assert st["exit_code"] == 2 and any("set aside" in p for p in st["problems"]), st
        env.sql("INSERT INTO notes VALUES (1, 'still syncing')", "INSERT INTO docs VALUES (4, 'd')")
        wait_until(lambda: len(env.items("notes")) == 1)
        assert daemon.poll() is None
        env.options["docs"] = {}
        env.write_config()
        daemon.send_signal(signal.SIGHUP)
        wait_until(lambda: status(env)["tables"]["docs"]["set_aside"] is None, timeout=30)
        wait_until(lambda: sorted(int(i["id"]["N"]) for i in env.items("docs")) == [1, 2, 3, 4], timeout=30)
    finally:
        err = stop(env, daemon)
    assert "a table is set aside" in err and "level=error" not in err.replace("reload refused", ""), err
    assert_in_sync(env, "docs")
    assert_in_sync(env, "notes")
