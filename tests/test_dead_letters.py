"""Rows DynamoDB can never accept: recorded, counted, never blocking, retried."""

from __future__ import annotations

import json

from conftest import Env
from equality import assert_in_sync
from test_cli import cli

from dynasync import backfill, capture, status, syncpass

POISON = [
    ("big", "UPDATE t SET v = zeroblob(401 * 1024) WHERE id = 1", "400 KB"),
    ("inf", "UPDATE t SET v = 9e999 WHERE id = 2", "not a finite number"),
    ("huge", "UPDATE t SET v = 1e308 WHERE id = 3", "number range"),
    ("utf8", "UPDATE t SET v = CAST(X'FFFE41' AS TEXT) WHERE id = 4", "not valid UTF-8"),
]


def test_poison_rows_do_not_block_and_are_retried_when_they_change(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    env.run(capture.init)
    conn = env.app_conn()
    conn.executemany("INSERT INTO t VALUES (?, 'ok')", [(i,) for i in range(1, 51)])
    for _, stmt, _ in POISON:
        conn.execute(stmt)
    r = env.run(syncpass.sync)
    assert r.rejected == 4
    assert len(env.items("t")) == 46  # every other row went through
    s = env.run(status.status)
    assert s.dead_letters == 4 and s.pending_changes == 0
    reasons = {k1: reason for k1, reason in env.rows("SELECT k1, reason FROM _dynasync_dead_letters")}
    for i, (_, _, why) in enumerate(POISON, start=1):
        assert why in reasons[i], reasons
    conn.execute("UPDATE t SET v = 'fixed' WHERE id IN (1, 2)")
    conn.execute("DELETE FROM t WHERE id = 3")
    env.run(syncpass.sync)
    assert env.run(status.status).dead_letters == 1
    assert_in_sync(env, "t", ignore={(("N", 4),)})


def test_bad_keys_are_dead_letters(env: Env) -> None:
    env.table("k", "CREATE TABLE k (id TEXT PRIMARY KEY, v INTEGER)")
    env.run(capture.init)
    conn = env.app_conn()
    conn.execute("INSERT INTO k VALUES ('', 1), (?, 2), ('good', 3), (NULL, 4)", ("x" * 3000,))
    r = env.run(syncpass.sync)
    assert r.rejected == 3 and [i["id"]["S"] for i in env.items("k")] == ["good"]
    reasons = sorted(r for (r,) in env.rows("SELECT reason FROM _dynasync_dead_letters"))
    assert any("empty" in x for x in reasons) and any("2048" in x for x in reasons)
    assert any("NULL" in x for x in reasons)


def test_backfill_records_poison_rows(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    env.sql("INSERT INTO t VALUES (1, 'ok'), (2, 1e308), (3, 'ok')")
    env.run(capture.init)
    r = env.run(backfill.backfill)
    assert r.tables[0].rejected == 1 and len(env.items("t")) == 2
    assert env.run(status.status).dead_letters == 1


def test_dead_letters_command_lists_and_retries(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    cli(env, "init", check=True)
    env.sql("INSERT INTO t VALUES (1, 1e308), (2, 'fine')")
    cli(env, "sync", check=True)
    listing = json.loads(cli(env, "dead-letters", "--json", check=True).stdout)
    assert [(d["table"], d["key"], d["attempts"]) for d in listing] == [("t", [1], 1)]
    assert "number range" in listing[0]["reason"]
    assert "dead-letters: 1" in cli(env, "dead-letters", check=True).stdout
    # Retrying an unchanged poison row fails again and counts the attempt.
    out = cli(env, "dead-letters", "--retry", check=True).stdout
    assert "queued 1" in out and "1 remain" in out
    assert json.loads(cli(env, "dead-letters", "--json").stdout)[0]["attempts"] == 2
    # Fixed at the source behind dynasync's back (triggers bypassed), then retried by hand.
    env.sql("DROP TRIGGER _dynasync_upd_t", "UPDATE t SET v = 2.5 WHERE id = 1")
    cli(env, "init", check=True)
    out = cli(env, "dead-letters", "--retry", check=True).stdout
    assert "0 remain" in out
    assert json.loads(cli(env, "status", "--json").stdout)["dead_letters"] == 0
    assert_in_sync(env, "t")
