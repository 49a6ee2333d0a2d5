"""The pipeline against DynamoDB Local: init, backfill, sync, status, verify,
repair, uninstall and the configuration errors."""

from __future__ import annotations

import pytest
from conftest import Env

from dynasync import backfill, capture, status, syncpass, tables, verify
from dynasync.exceptions import KeySchemaError, SourceError, TableMissingError


def n(item: dict, attr: str = "id") -> int:  # type: ignore[type-arg]
    return int(item[attr]["N"])


def test_init_is_idempotent(env: Env) -> None:
    env.table("users", "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE)")
    first = env.run(capture.init)
    assert first.plan.statements and first.created_tables == [env.tables["users"]]
    schema_before = env.rows("SELECT type, name, sql FROM sqlite_master ORDER BY name")
    (cookie_before,) = env.rows("PRAGMA schema_version")
    second = env.run(capture.init)
    assert second.plan.statements == [] and second.created_tables == []
    assert env.rows("SELECT type, name, sql FROM sqlite_master ORDER BY name") == schema_before
    assert env.rows("PRAGMA schema_version") == [cookie_before]


def test_init_rerun_after_schema_change_updates_triggers(env: Env) -> None:
    env.table("users", "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    env.run(capture.init)
    env.sql("CREATE UNIQUE INDEX users_email ON users (email)")
    r = env.run(capture.init)
    assert any("_dynasync_rep_users" in s for s in r.plan.statements)


def test_init_refuses_table_without_primary_key(env: Env) -> None:
    env.table("logs", "CREATE TABLE logs (line TEXT)")
    with pytest.raises(SourceError, match="'logs' has no declared PRIMARY KEY"):
        env.run(capture.init)


def test_init_refuses_unknown_table(env: Env) -> None:
    env.table("ghost")
    with pytest.raises(SourceError, match="'ghost' does not exist"):
        env.run(capture.init)


def test_key_schema_mismatch_is_a_clear_error(env: Env) -> None:
    target = env.table("users", "CREATE TABLE users (id INTEGER PRIMARY KEY)")
    env.client.create_table(
        TableName=target,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )
    with pytest.raises(KeySchemaError, match=r"has key schema \(id S\).*needs \(id N\)"):
        env.run(capture.init)


def test_missing_target_table_loses_nothing(env: Env) -> None:
    target = env.table("users", "CREATE TABLE users (id INTEGER PRIMARY KEY, v TEXT)")
    env.write_config(dynamodb={"create_tables": False})
    env.run(_init_sqlite_only)
    env.sql("INSERT INTO users VALUES (1, 'a'), (2, 'b')")
    with pytest.raises(TableMissingError, match=target):
        env.run(syncpass.sync)
    assert env.run(status.status).pending_changes == 2
    env.client.create_table(
        TableName=target,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )
    env.run(syncpass.sync)
    assert sorted(n(i) for i in env.items("users")) == [1, 2]


def _init_sqlite_only(app: object) -> None:
    from dynasync.app import App

    assert isinstance(app, App)
    schemas = {name: t.schema for name, t in tables.load(app.conn, app.config).items()}
    capture.apply(app.conn, capture.plan(app.conn, schemas), schemas)


def test_empty_and_single_row_tables(env: Env) -> None:
    env.table("empty", "CREATE TABLE empty (id INTEGER PRIMARY KEY)")
    env.table("one", "CREATE TABLE one (id TEXT PRIMARY KEY, v INTEGER)")
    env.sql("INSERT INTO one VALUES ('only', 7)")
    env.run(capture.init)
    r = env.run(backfill.backfill)
    assert [(t.table, t.rows) for t in r.tables] == [("empty", 0), ("one", 1)]
    assert env.items("empty") == [] and env.items("one") == [{"id": {"S": "only"}, "v": {"N": "7"}}]
    assert env.run(syncpass.sync).entries == 0
    assert env.run(verify.verify).in_sync


def test_composite_keys(env: Env) -> None:
    env.table("orders", "CREATE TABLE orders (cust TEXT, no INTEGER, total REAL, PRIMARY KEY (cust, no))")
    env.sql("INSERT INTO orders VALUES ('a', 1, 9.99), ('a', 2, 0.5), ('b', 1, NULL)")
    env.run(capture.init)
    desc = env.client.describe_table(TableName=env.tables["orders"])["Table"]
    assert desc["KeySchema"] == [{"AttributeName": "cust", "KeyType": "HASH"},
                                 {"AttributeName": "no", "KeyType": "RANGE"}]
    env.run(backfill.backfill)
    env.sql("UPDATE orders SET no = 3 WHERE cust = 'a' AND no = 1", "DELETE FROM orders WHERE cust = 'b'")
    env.run(syncpass.sync)
    got = sorted((i["cust"]["S"], n(i, "no")) for i in env.items("orders"))
    assert got == [("a", 2), ("a", 3)]
    assert env.run(verify.verify).in_sync


def test_many_updates_to_one_key_in_one_pass(env: Env) -> None:
    env.table("c", "CREATE TABLE c (id INTEGER PRIMARY KEY, v INTEGER)")
    env.run(capture.init)
    conn = env.app_conn()
    conn.execute("INSERT INTO c VALUES (1, 0)")
    for i in range(1, 500):
        conn.execute("UPDATE c SET v = ? WHERE id = 1", (i,))
    r = env.run(syncpass.sync)
    assert r.entries == 500 and r.applied == 1 and r.stats.requests == 1
    assert env.items("c") == [{"id": {"N": "1"}, "v": {"N": "499"}}]


def test_backfill_resumes_after_interruption(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    env.write_config(backfill={"chunk_size": 10})
    conn = env.app_conn()
    conn.executemany("INSERT INTO t VALUES (?, 'x')", [(i,) for i in range(95)])
    env.run(capture.init)
    with env.app() as app:
        def stop_after_three(table: str, done: int, total: int) -> None:
            if done >= 30:
                app.stop.set()
        backfill.backfill(app, progress=stop_after_three)
    assert env.rows("SELECT rows, done FROM _dynasync_backfill") == [(30, 0)]
    # Prove the resume copies only the rest: empty the table of what was copied.
    # (Deleting and recreating the table would now restore it whole, as it should.)
    for i in range(30):
        env.client.delete_item(TableName=env.tables["t"], Key={"id": {"N": str(i)}})
    assert env.items("t") == []
    r = env.run(backfill.backfill)
    assert r.tables[0].resumed and r.tables[0].rows == 95
    assert sorted(n(i) for i in env.items("t")) == list(range(30, 95))
    # A finished backfill run again starts over.
    r = env.run(backfill.backfill)
    assert not r.tables[0].resumed and len(env.items("t")) == 95


def test_status_counts(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    env.run(capture.init)
    env.sql("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    s = env.run(status.status)
    assert (s.pending_changes, s.dead_letters, s.high_water_mark, s.installed) == (3, 0, 0, True)
    env.sql("UPDATE t SET v = 1e308 WHERE id = 2")
    env.run(syncpass.sync)
    s = env.run(status.status)
    assert (s.pending_changes, s.dead_letters, s.high_water_mark) == (0, 1, 4)
    assert s.tables["t"].dead_letters == 1


def test_verify_and_repair(env: Env) -> None:
    target = env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    env.sql("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    env.run(capture.init)
    env.run(backfill.backfill)
    env.client.delete_item(TableName=target, Key={"id": {"N": "1"}})
    env.client.put_item(TableName=target, Item={"id": {"N": "2"}, "v": {"S": "tampered"}})
    env.client.put_item(TableName=target, Item={"id": {"N": "99"}, "v": {"S": "ghost"}})
    r = env.run(verify.verify)
    t = r.tables[0]
    assert (t.missing, t.different, t.extra, r.in_sync) == (1, 1, 1, False)
    r = env.run(verify.verify, repair=True)
    assert r.in_sync and r.tables[0].repaired == 3
    assert env.run(verify.verify).in_sync
    assert sorted((n(i), i["v"]["S"]) for i in env.items("t")) == [(1, "a"), (2, "b"), (3, "c")]


def test_uninstall_leaves_application_tables(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT UNIQUE)")
    env.sql("INSERT INTO t VALUES (1, 'a')")
    env.run(capture.init)
    env.run(capture.uninstall)
    names = [r[0] for r in env.rows("SELECT name FROM sqlite_master WHERE name LIKE '%dynasync%'")]
    assert names == []
    assert env.rows("SELECT * FROM t") == [(1, "a")]
    env.sql("INSERT INTO t VALUES (2, 'b')")  # the application keeps working


def test_missing_database_file_is_an_error_and_not_created(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    env.db_path.unlink()
    with pytest.raises(SourceError, match="does not exist"):
        env.run(syncpass.sync)
    assert not env.db_path.exists()
