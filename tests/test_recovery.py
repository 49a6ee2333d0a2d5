"""Restores from backup and damaged state: detected, explained, recoverable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import Env
from equality import assert_in_sync
from test_cli import cli

from dynasync import capture, syncpass


def backup(env: Env) -> Path:
    path = env.dir / "backup.db"
    dest = sqlite3.connect(path)
    src = env.app_conn()
    src.backup(dest)
    src.close()
    dest.close()
    return path


def restore(env: Env, path: Path) -> None:
    src = sqlite3.connect(path)
    dst = env.app_conn()
    src.backup(dst)
    dst.close()
    src.close()


def test_restore_from_backup_then_verify_repair(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    env.run(capture.init)
    env.sql("INSERT INTO t VALUES (1, 'old'), (2, 'old')")
    env.run(syncpass.sync)
    snapshot = backup(env)
    env.sql("UPDATE t SET v = 'new' WHERE id = 1", "INSERT INTO t VALUES (3, 'new')", "DELETE FROM t WHERE id = 2")
    env.run(syncpass.sync)
    restore(env, snapshot)  # data and state rewind together; DynamoDB is now ahead
    assert cli(env, "verify").returncode == 1
    assert cli(env, "verify", "--repair").returncode == 0
    assert_in_sync(env, "t")
    env.sql("INSERT INTO t VALUES (4, 'after restore')")  # capture keeps working
    cli(env, "sync", check=True)
    assert_in_sync(env, "t")


def test_state_ahead_of_changelog_says_what_to_run_and_backfill_recovers(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    cli(env, "init", check=True)
    env.sql("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    cli(env, "sync", check=True)
    # The changelog replaced behind dynasync's back: numbering restarts at 1.
    env.sql("DROP TABLE _dynasync_changelog")
    cli(env, "init", check=True)
    env.sql("INSERT INTO t VALUES (3, 'c')", "DELETE FROM t WHERE id = 1")
    p = cli(env, "sync")
    assert p.returncode != 0
    assert "ahead of the changelog" in p.stderr and "dynasync backfill" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    cli(env, "backfill", check=True)
    cli(env, "verify", "--repair", check=True)
    assert_in_sync(env, "t")
    env.sql("UPDATE t SET v = 'z'")
    cli(env, "sync", check=True)
    assert_in_sync(env, "t")


def test_missing_state_tables_say_run_init(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    p = cli(env, "sync")
    assert p.returncode != 0 and "dynasync init" in p.stderr
    cli(env, "init", check=True)
    env.sql("DROP TABLE _dynasync_dead_letters")
    p = cli(env, "sync")
    assert p.returncode != 0 and "damaged" in p.stderr and "_dynasync_dead_letters" in p.stderr
