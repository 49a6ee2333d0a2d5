"""Issue 9, operations: the schema or the target changing under a running
sync, locks, stalls and per-item errors. Classes 3, 7, 8, 11, 12 and 14."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Any

import pytest
from conftest import Env
from equality import assert_in_sync
from test_cli import DYNASYNC, cli, wait_until

from dynasync import backfill, capture, drift, status, syncpass
from dynasync.exceptions import TableMissingError


def setup(env: Env, ddl: str = "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, extra TEXT)") -> None:
    env.table("t", ddl)
    env.run(capture.init)


# --- 3. a migration that lands while a refresh (or its reconcile) runs ---------


def test_migration_during_a_reconcile_is_seen_by_the_next_pass(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    setup(env)
    env.sql("INSERT INTO t VALUES (1, 'a', 'x'), (2, 'b', 'y')")
    env.run(backfill.backfill)
    env.sql("ALTER TABLE t DROP COLUMN extra")  # rows change unseen: the next pass reconciles
    real = drift.verify_tables

    def reconcile_while_a_migration_lands(*args: Any, **kw: Any) -> Any:
        # A table rebuild, and a write while capture is gone, in the middle of the reconcile.
        env.sql("CREATE TABLE t2 (id INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO t2 SELECT id, v FROM t",
                "DROP TABLE t", "ALTER TABLE t2 RENAME TO t", "INSERT INTO t VALUES (3, 'unseen')")
        monkeypatch.setattr(drift, "verify_tables", real)
        return real(*args, **kw)

    monkeypatch.setattr(drift, "verify_tables", reconcile_while_a_migration_lands)
    with env.app() as app:
        syncer = syncpass.Syncer(app)  # one process, as the daemon keeps it
        assert syncer.run_pass().reconciled == ["t"]
        assert syncer.run_pass().reconciled == ["t"]  # re-armed and reconciled, without a restart
        env.sql("INSERT INTO t VALUES (4, 'armed')")
        syncer.run_pass()
    assert_in_sync(env, "t")


# --- 7. the target table deleted under a running sync, then back ---------------


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


# --- 8. one lock per database file, whatever path reaches it --------------------


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
    p = subprocess.run([DYNASYNC, "sync", "--config", str(second)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
