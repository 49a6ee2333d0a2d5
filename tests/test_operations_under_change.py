"""Operations: the schema or the target changing under a running
sync, locks, stalls and per-item errors. Classes 3, 7, 8, 11, 12 and 14."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

import pytest
from conftest import Env
from equality import assert_in_sync
from test_cli import DYNASYNC, cli, wait_until

from dynasync import backfill, capture, reconcile, status, syncpass
from dynasync.exceptions import TableGoneError, TableMissingError


def setup(env: Env, ddl: str = "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, extra TEXT)") -> None:
    env.table("t", ddl)
    env.run(capture.init)


# --- a migration that lands while a refresh (or its reconcile) runs ---------


def test_migration_during_a_reconcile_is_seen_by_the_next_pass(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    setup(env)
    env.sql("INSERT INTO t VALUES (1, 'a', 'x'), (2, 'b', 'y')")
    env.run(backfill.backfill)
    env.sql("ALTER TABLE t DROP COLUMN extra")  # rows change unseen: the next pass reconciles
    real = reconcile.TableReconcile.step

    def reconcile_while_a_migration_lands(self: Any, *args: Any, **kw: Any) -> Any:
        # A table rebuild, and a write while capture is gone, in the middle of the reconcile.
        env.sql("CREATE TABLE t2 (id INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO t2 SELECT id, v FROM t",
                "DROP TABLE t", "ALTER TABLE t2 RENAME TO t", "INSERT INTO t VALUES (3, 'unseen')")
        monkeypatch.setattr(reconcile.TableReconcile, "step", real)
        return real(self, *args, **kw)

    monkeypatch.setattr(reconcile.TableReconcile, "step", reconcile_while_a_migration_lands)
    with env.app() as app:
        syncer = syncpass.Syncer(app)  # one process, as the daemon keeps it
        assert syncer.run_pass().reconciled == ["t"]
        assert syncer.run_pass().reconciled == ["t"]  # re-armed and reconciled, without a restart
        env.sql("INSERT INTO t VALUES (4, 'armed')")
        syncer.run_pass()
    assert_in_sync(env, "t")


# --- the target table deleted under a running sync, then back ---------------


def _delete_target(env: Env) -> None:
    env.client.delete_table(TableName=env.tables["t"])


def _create_target(env: Env) -> None:
    env.client.create_table(TableName=env.tables["t"], BillingMode="PAY_PER_REQUEST",
                            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
                            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])


@pytest.mark.parametrize("recreated_by", ["create_tables", "operator"])
def test_deleted_target_is_reported_then_restored_whole(env: Env, recreated_by: str) -> None:
    setup(env)
    env.write_config(dynamodb={"create_tables": recreated_by == "create_tables"})
    env.sql("INSERT INTO t VALUES (1, 'a', NULL), (2, 'b', NULL), (3, 'c', NULL)")
    env.run(backfill.backfill)
    with env.app() as app:
        syncer = syncpass.Syncer(app)
        syncer.run_pass()
        _delete_target(env)  # an operator mistake, a stack teardown
        env.sql("UPDATE t SET v = 'B' WHERE id = 2")
        if recreated_by == "operator":
            with pytest.raises(TableMissingError, match=env.tables["t"]):
                syncer.run_pass()
            s = env.run(status.status)
            assert s.exit_code == status.CRITICAL and s.missing_targets == [env.tables["t"]]
            assert any(env.tables["t"] in p for p in s.problems)
            with pytest.raises(TableMissingError):
                syncer.run_pass()  # still gone: still failing, nothing advanced
            _create_target(env)
        else:
            with pytest.raises(TableMissingError):
                syncer.run_pass()  # the write finds it gone; the next pass recreates it
        r = syncer.run_pass()
        assert r.reconciled == ["t"]
    assert_in_sync(env, "t")  # every row, not only the pending change
    assert env.run(status.status).missing_targets == []


def test_target_replaced_while_dynasync_was_stopped_is_restored(env: Env) -> None:
    setup(env)
    env.sql("INSERT INTO t VALUES (1, 'a', NULL), (2, 'b', NULL)")
    env.run(backfill.backfill)
    _delete_target(env)
    _create_target(env)  # an empty table of the same name and key: the items are gone
    assert env.run(syncpass.sync).reconciled == ["t"]
    assert_in_sync(env, "t")


def test_daemon_reports_a_vanished_target_and_recreates_it(env: Env) -> None:
    setup(env)
    env.sql("INSERT INTO t VALUES (1, 'a', NULL), (2, 'b', NULL)")
    env.run(backfill.backfill)
    env.write_config(sync={"interval": 0.2}, dynamodb={"create_tables": False})
    daemon = subprocess.Popen([DYNASYNC, "run", "--config", str(env.config_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: cli(env, "status", "--json").returncode == 0)
        _delete_target(env)
        env.sql("INSERT INTO t VALUES (3, 'c', NULL)")
        wait_until(lambda: cli(env, "status", "--check").returncode == 2, timeout=30)
        assert env.tables["t"] in cli(env, "status").stdout
        _create_target(env)
        wait_until(lambda: len(env.items("t")) == 3, timeout=60)
        wait_until(lambda: cli(env, "status", "--check").returncode == 0, timeout=30)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    assert env.tables["t"] in err and "restoring" in err
    assert_in_sync(env, "t")


# --- one lock per database file, whatever path reaches it --------------------


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_one_daemon_per_database_file_through_links(env: Env, link: str) -> None:
    setup(env)
    other = env.dir / "other"
    other.mkdir()
    alias = other / "alias.db"
    (os.symlink if link == "symlink" else os.link)(env.db_path, alias)
    second = env.dir / "second.toml"
    second.write_text(env.config_path.read_text().replace(str(env.db_path), str(alias)))
    daemon = subprocess.Popen([DYNASYNC, "run", "--config", str(env.config_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: json.loads(cli(env, "status", "--json").stdout or "{}").get("running") is True)
        p = subprocess.run([DYNASYNC, "sync", "--config", str(second)], capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and "another dynasync instance is running" in p.stderr, p.stderr
        assert f"pid {daemon.pid}" in p.stderr
        s = subprocess.run([DYNASYNC, "status", "--json", "--config", str(second)],
                           capture_output=True, text=True, timeout=60)
        assert json.loads(s.stdout)["running"] is True
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    assert daemon.returncode == 0


# --- SIGTERM while DynamoDB hangs -------------------------------------------


@pytest.fixture
def proxy(ddb_local: Any) -> Any:
    from faultproxy import FaultProxy

    p = FaultProxy(ddb_local.port)
    yield p
    p.close()


@pytest.mark.parametrize("hung", ["BatchWriteItem", "DescribeTable"])
def test_sigterm_stops_within_10s_while_dynamodb_hangs(env: Env, proxy: Any, hung: str) -> None:
    setup(env)
    # A hung write is waited for until its deadline, connect_timeout + read_timeout (5 s here);
    # a hung read is abandoned after workers.ABANDON_AFTER (5 s).
    env.write_config(endpoint=proxy.endpoint, sync={"interval": 0.2},
                     dynamodb={"connect_timeout": 1.0, "read_timeout": 4.0})
    proxy.hang.add(hung)
    env.sql("INSERT INTO t VALUES (1, 'a', NULL), (2, 'b', NULL)")
    daemon = subprocess.Popen([DYNASYNC, "run", "--config", str(env.config_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: proxy.counts["hung"] > 0, timeout=30)
        stopped = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
        took = time.monotonic() - stopped
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, err
    assert took < 10, f"stopped after {took:.1f}s"
    (hwm,) = env.rows("SELECT value FROM _dynasync_state WHERE name = 'high_water_mark'")[0]
    assert hwm == 0  # nothing acknowledged, nothing skipped
    proxy.hang.clear()
    env.write_config(endpoint=env.endpoint)
    cli(env, "sync", check=True)  # the abandoned writes are replayed
    assert_in_sync(env, "t")


# --- per-item errors other than ValidationException --------------------------


def test_item_collection_size_limit_becomes_a_dead_letter(env: Env, proxy: Any) -> None:
    setup(env)
    env.write_config(endpoint=proxy.endpoint)
    proxy.item_error = (b"collection-full", "ItemCollectionSizeLimitExceededException")
    env.sql("INSERT INTO t VALUES (1, 'a', NULL), (2, 'collection-full', NULL), (3, 'c', NULL)")
    r = env.run(syncpass.sync)
    assert r.rejected == 1 and proxy.counts["item_error"] > 0
    (dl,) = env.rows("SELECT k1, reason FROM _dynasync_dead_letters")
    assert dl[0] == 2 and "ItemCollectionSizeLimitExceeded" in dl[1]
    assert sorted(int(i["id"]["N"]) for i in env.items("t")) == [1, 3]
    proxy.item_error = None
    env.sql("UPDATE t SET v = 'trimmed' WHERE id = 2")  # retried when the row changes
    env.run(syncpass.sync)
    assert env.rows("SELECT count(*) FROM _dynasync_dead_letters") == [(0,)]
    assert_in_sync(env, "t")


# --- two configs on one database ----------------------------------------------


def test_a_second_config_on_one_database_is_refused_and_loses_nothing(env: Env) -> None:
    env.table("a", "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)")
    cli(env, "init", check=True)
    env.sql("CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)")
    other = env.dir / "other.toml"
    text = env.config_path.read_text()
    other.write_text(text[: text.index("[[tables]]")] + '[[tables]]\nsource = "b"\ntarget = "other-b"\n')
    triggers = env.rows("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
    env.sql("INSERT INTO a VALUES (1, 'x')", "INSERT INTO b VALUES (1, 'y')")
    for command in (["init"], ["sync"], ["backfill"], ["verify", "--repair"], ["dead-letters", "--retry"],
                    ["uninstall"]):
        p = subprocess.run([DYNASYNC, *command, "--config", str(other)], capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and "another config" in p.stderr and str(env.config_path) in p.stderr, p.stderr
    # The first config's capture and changes are untouched.
    assert env.rows("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name") == triggers
    assert env.rows("SELECT count(*) FROM _dynasync_changelog WHERE tbl = 'a'") == [(1,)]
    cli(env, "sync", check=True)
    assert [i["id"]["N"] for i in env.items("a")] == ["1"]
    # A config that was moved away is taken over by init with the new one.
    moved = env.dir / "moved.toml"
    env.config_path.rename(moved)
    p = subprocess.run([DYNASYNC, "sync", "--config", str(other)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "no longer exists" in p.stderr
    p = subprocess.run([DYNASYNC, "init", "--config", str(moved)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


# --- found by review: migrations, stops, deploys and odd keys ----------------------


def test_table_renamed_with_legacy_alter_table_leaves_no_trigger_behind(env: Env) -> None:
    setup(env, "CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT, extra TEXT)")
    env.sql("INSERT INTO t VALUES ('a', 'x', NULL)")
    with env.app() as app:
        syncer = syncpass.Syncer(app)
        syncer.run_pass()
        env.sql("PRAGMA legacy_alter_table = ON", "ALTER TABLE t RENAME TO t2")
        # Reported, and set aside: a daemon goes on with the other tables, and t may come back.
        assert "does not exist" in syncer.run_pass().failed["t"]
        with pytest.raises(TableGoneError):
            syncpass.sync(app)  # the one-shot command fails on it
    env.sql("INSERT INTO t2 VALUES ('b', 'y', NULL)")  # the application's writes work again
    assert env.rows("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'") == [(0,)]


def test_rearm_holds_the_write_lock_from_inspection_to_triggers(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    setup(env)
    env.sql("INSERT INTO t VALUES (1, 'a', NULL)")
    env.run(backfill.backfill)
    env.sql("CREATE UNIQUE INDEX t_v ON t (v)")  # a schema change: the next pass re-arms
    real = capture.plan
    seen: list[str] = []

    def migration_in_the_middle(*args: Any, **kw: Any) -> Any:
        other = sqlite3.connect(env.db_path, timeout=0, isolation_level=None)
        try:
            other.execute("DROP INDEX t_v")
        except sqlite3.OperationalError as e:
            seen.append(str(e))  # it must wait: capture is planned and installed atomically
        finally:
            other.close()
        return real(*args, **kw)

    monkeypatch.setattr(capture, "plan", migration_in_the_middle)
    env.run(syncpass.sync)
    assert seen and "locked" in seen[0]


def test_sigterm_during_a_long_reconcile_stops_promptly(env: Env) -> None:
    setup(env)
    conn = env.app_conn()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?, 'v', NULL)", [(i,) for i in range(20_000)])
    conn.execute("COMMIT")
    conn.close()
    env.run(backfill.backfill)
    env.sql("ALTER TABLE t ADD COLUMN c INTEGER DEFAULT 0")  # every item changes: a reconcile
    daemon = subprocess.Popen([DYNASYNC, "run", "--config", str(env.config_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while "reconciling" not in (daemon.stderr.readline() if daemon.stderr else ""):
            assert time.monotonic() < deadline
        stopped = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=30)
        took = time.monotonic() - stopped
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0 and took < 10, took
    cli(env, "sync", check=True)  # the reconcile is still owed, and done now
    assert_in_sync(env, "t")


def test_owner_survives_a_symlinked_deploy_and_takeover_is_explicit(env: Env) -> None:
    setup(env)
    releases = env.dir / "releases"
    (releases / "v1").mkdir(parents=True)
    (releases / "v1" / "dynasync.toml").write_text(env.config_path.read_text())
    current = env.dir / "current"
    current.symlink_to(releases / "v1")
    deployed = current / "dynasync.toml"
    p = subprocess.run([DYNASYNC, "init", "--takeover", "--config", str(deployed)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    (releases / "v2").mkdir()
    (releases / "v2" / "dynasync.toml").write_text(env.config_path.read_text())
    current.unlink()
    current.symlink_to(releases / "v2")  # v1 stays, for a rollback
    p = subprocess.run([DYNASYNC, "sync", "--config", str(deployed)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([DYNASYNC, "sync", "--config", str(env.config_path)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode != 0 and "--takeover" in p.stderr


def test_dead_letter_of_a_key_that_is_not_utf8_survives_a_retry(env: Env) -> None:
    setup(env, "CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT, extra TEXT)")
    env.sql("INSERT INTO t VALUES (CAST(x'ff61' AS TEXT), 'v', NULL)", "INSERT INTO t VALUES ('ok', 'v', NULL)")
    env.run(syncpass.sync)
    assert env.rows("SELECT typeof(k1) FROM _dynasync_dead_letters") == [("text",)]
    p = cli(env, "dead-letters", "--retry", check=True)
    assert "1 remain" in p.stdout
    env.sql("DELETE FROM t WHERE id = CAST(x'ff61' AS TEXT)")
    env.run(syncpass.sync)
    assert env.rows("SELECT count(*) FROM _dynasync_dead_letters") == [(0,)]
