"""SQLite behaviours that break naive trigger capture, each against DynamoDB Local."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import Env
from equality import assert_in_sync

from dynasync import backfill, capture, status, syncpass, verify


def setup(env: Env, ddl: str, name: str = "t", *more: str) -> None:
    env.table(name, ddl)
    for stmt in more:
        env.sql(stmt)
    env.run(capture.init)


def sync(env: Env) -> syncpass.PassResult:
    return env.run(syncpass.sync)


def test_drained_changelog_never_hands_out_a_seq_at_or_below_the_mark(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    for round_ in range(3):
        env.sql(f"INSERT INTO t VALUES ({round_}, 'x')")
        sync(env)
        assert env.rows("SELECT count(*) FROM _dynasync_changelog WHERE seq > "
                        "(SELECT value FROM _dynasync_state WHERE name='high_water_mark')") == [(0,)]
    env.sql("DELETE FROM t")
    sync(env)
    env.sql("INSERT INTO t VALUES (42, 'late')")
    (hwm,) = env.rows("SELECT value FROM _dynasync_state WHERE name = 'high_water_mark'")[0]
    (new_seq,) = env.rows("SELECT max(seq) FROM _dynasync_changelog")[0]
    assert new_seq > hwm
    sync(env)
    assert_in_sync(env, "t")


def test_update_changing_the_key_deletes_the_old_item(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    env.sql("INSERT INTO t VALUES (1, 'a')")
    sync(env)
    env.sql("UPDATE t SET id = 2 WHERE id = 1")
    sync(env)
    assert [i["id"]["N"] for i in env.items("t")] == ["2"]
    env.sql("UPDATE t SET id = id + 10")  # a key change in a later pass too
    sync(env)
    assert_in_sync(env, "t")


@pytest.mark.parametrize("recursive", [False, True])
def test_replace_deleting_another_row_through_unique(env: Env, recursive: bool) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT UNIQUE, v TEXT)")
    env.sql("INSERT INTO t VALUES (1, 'a', 'x'), (2, 'b', 'y'), (3, 'c', 'z')")
    sync(env)
    pragma = "PRAGMA recursive_triggers = ON" if recursive else "PRAGMA recursive_triggers = OFF"
    env.sql(pragma, "INSERT OR REPLACE INTO t VALUES (10, 'a', 'new')")  # deletes row 1
    env.sql(pragma, "REPLACE INTO t VALUES (11, 'b', 'new')")  # deletes row 2
    env.sql(pragma, "UPDATE OR REPLACE t SET email = 'c' WHERE id = 10")  # deletes row 3
    sync(env)
    assert sorted(int(i["id"]["N"]) for i in env.items("t")) == [10, 11]
    assert_in_sync(env, "t")


def test_replace_through_composite_unique_index_and_composite_key(env: Env) -> None:
    setup(env, "CREATE TABLE t (a TEXT, b INTEGER, x TEXT, y TEXT, PRIMARY KEY (a, b))", "t",
          "CREATE UNIQUE INDEX t_xy ON t (x, y)")
    env.sql("INSERT INTO t VALUES ('k', 1, 'p', 'q'), ('k', 2, 'p', 'r')")
    sync(env)
    env.sql("INSERT OR REPLACE INTO t VALUES ('z', 9, 'p', 'q')")
    sync(env)
    assert_in_sync(env, "t", {"a": "S", "b": "N"})


def test_upsert_ignore_and_noop_updates(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT UNIQUE, n INTEGER)")
    env.sql("INSERT INTO t VALUES (1, 'a', 0)")
    sync(env)
    env.sql("INSERT INTO t VALUES (1, 'a', 5) ON CONFLICT (id) DO UPDATE SET n = n + excluded.n")
    env.sql("INSERT INTO t VALUES (2, 'a', 9) ON CONFLICT (email) DO UPDATE SET n = 100")
    env.sql("INSERT INTO t VALUES (1, 'zz', 7) ON CONFLICT DO NOTHING")
    env.sql("INSERT OR IGNORE INTO t VALUES (1, 'q', 1)")
    env.sql("INSERT OR IGNORE INTO t VALUES (3, 'c', 3)")
    env.sql("UPDATE t SET n = n WHERE id = 1")  # no-op update
    env.sql("UPDATE t SET n = 1 WHERE id = 999")  # matches nothing
    sync(env)
    assert env.rows("SELECT * FROM t ORDER BY id") == [(1, "a", 100), (3, "c", 3)]
    assert_in_sync(env, "t")


def test_foreign_key_cascades(env: Env) -> None:
    env.table("parent", "CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    env.table("child", "CREATE TABLE child (id INTEGER PRIMARY KEY, "
                       "p INTEGER REFERENCES parent(id) ON DELETE CASCADE ON UPDATE CASCADE)")
    env.table("ref", "CREATE TABLE ref (id INTEGER PRIMARY KEY, "
                     "p INTEGER REFERENCES parent(id) ON DELETE SET NULL ON UPDATE CASCADE)")
    env.run(capture.init)
    env.sql("PRAGMA foreign_keys = ON", "INSERT INTO parent VALUES (1), (2)")
    env.sql("INSERT INTO child VALUES (10, 1), (11, 1), (12, 2)", "INSERT INTO ref VALUES (20, 1), (21, 2)")
    sync(env)
    conn = env.app_conn()
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("DELETE FROM parent WHERE id = 1")
    conn.execute("UPDATE parent SET id = 5 WHERE id = 2")
    conn.close()
    sync(env)
    assert env.rows("SELECT * FROM child") == [(12, 5)]
    for table in ("parent", "child", "ref"):
        assert_in_sync(env, table)
    assert {i["id"]["N"]: i.get("p") for i in env.items("ref")} == {"20": None, "21": {"N": "5"}}


def test_non_key_schema_changes_need_no_init(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT, email TEXT UNIQUE)")
    env.sql("INSERT INTO t VALUES (1, 'a', 'b', 'e')")
    sync(env)
    env.sql("ALTER TABLE t ADD COLUMN c INTEGER DEFAULT 7")
    env.sql("INSERT INTO t (id, a, c) VALUES (2, 'x', 8)")
    sync(env)
    assert_in_sync(env, "t")
    env.sql("ALTER TABLE t DROP COLUMN b")  # the migration must not fail because of capture
    env.sql("ALTER TABLE t RENAME COLUMN a TO alpha")
    env.sql("ALTER TABLE t RENAME COLUMN email TO mail")  # a column a trigger names: SQLite rewrites it
    env.sql("UPDATE t SET alpha = 'z'")
    env.sql("INSERT OR REPLACE INTO t (id, mail) VALUES (3, 'e')")  # replace capture still works
    sync(env)
    assert_in_sync(env, "t")
    assert sorted(env.items("t")[0]) in (["alpha", "c", "id"], ["alpha", "c", "id", "mail"])


def test_table_rebuild_is_noticed_rearmed_and_reconciled(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    env.sql("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    env.run(backfill.backfill)
    # What migration tools do: create, copy, drop, rename. The triggers go with the old table.
    conn = env.app_conn()
    conn.executescript("""
        BEGIN;
        CREATE TABLE t_new (id INTEGER PRIMARY KEY, v TEXT, extra TEXT);
        INSERT INTO t_new (id, v) SELECT id, v FROM t;
        DROP TABLE t;
        ALTER TABLE t_new RENAME TO t;
        COMMIT;
    """)
    # Writes while capture is absent: invisible to any trigger.
    conn.execute("DELETE FROM t WHERE id = 1")
    conn.execute("UPDATE t SET v = 'B' WHERE id = 2")
    conn.execute("INSERT INTO t VALUES (4, 'd', 'e')")
    conn.close()
    r = sync(env)
    assert r.reconciled == ["t"]
    assert_in_sync(env, "t")
    names = {n for (n,) in env.rows("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert {"_dynasync_ins_t", "_dynasync_upd_t", "_dynasync_del_t", "_dynasync_key_t"} <= names
    env.sql("INSERT INTO t VALUES (5, 'armed', NULL)")
    sync(env)
    assert_in_sync(env, "t")


@pytest.mark.parametrize("name", ["order items", 'we"ird\'s', "select", "tablé_ñ"])
def test_identifiers_that_need_quoting(env: Env, name: str) -> None:
    q = '"' + name.replace('"', '""') + '"'
    col = '"' + ("key " + name).replace('"', '""') + '"'
    setup(env, f"CREATE TABLE {q} ({col} TEXT PRIMARY KEY, \"va lue\" TEXT, \"from\" INTEGER UNIQUE)", name)
    env.sql(f"INSERT INTO {q} VALUES ('a', 'x', 1), ('b', 'y', 2)")
    sync(env)
    env.sql(f"UPDATE {q} SET {col} = 'c' WHERE {col} = 'a'", f"REPLACE INTO {q} VALUES ('d', 'z', 2)")
    sync(env)
    assert_in_sync(env, name, {"key " + name: "S"})
    assert env.run(verify.verify).in_sync


def test_values_corner_cases(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, x ANY_TYPE)")
    rows = [
        (1, 2**63 - 1, 0.1, "", b"", None),
        (2, -(2**63), 1 / 3, "nul\x00inside", b"\x00" * 300_000, "text in numeric"),
        (3, 0, 1e-130, "ünïcödé ✓", bytes(range(256)), 12.5),
        (4, None, 123456789.123456789, None, None, b"blob in any"),
        (5, "not a number", 9.99e125, "x", b"y", 2**62),
    ]
    conn = env.app_conn()
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.close()
    sync(env)
    assert env.run(status.status).dead_letters == 0
    assert_in_sync(env, "t")
    item = {i["id"]["N"]: i for i in env.items("t")}
    assert item["1"]["i"] == {"N": "9223372036854775807"} and item["2"]["i"] == {"N": "-9223372036854775808"}
    assert item["1"]["s"] == {"S": ""} and item["1"]["b"] == {"B": b""}
    assert item["2"]["s"] == {"S": "nul\x00inside"} and len(item["2"]["b"]["B"]) == 300_000
    assert "i" not in item["4"] and item["5"]["i"] == {"S": "not a number"}
    assert env.run(verify.verify).in_sync


def test_large_transaction_and_delete_without_where(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    env.write_config(sync={"batch_size": 4000}, dynamodb={"max_concurrency": 8})
    conn = env.app_conn()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?, ?)", ((i, f"row {i}") for i in range(30_000)))
    conn.execute("COMMIT")
    r = sync(env)
    assert r.entries == 30_000 and len(env.items("t")) == 30_000
    conn.execute("DELETE FROM t")
    conn.close()
    r = sync(env)
    assert r.entries == 30_000 and env.items("t") == []


def test_writes_during_backfill_are_neither_lost_nor_stale(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    env.write_config(backfill={"chunk_size": 50})
    conn = env.app_conn()
    conn.executemany("INSERT INTO t VALUES (?, 0)", [(i,) for i in range(2000)])
    stop = threading.Event()

    def churn() -> None:
        c = env.app_conn()
        i = 0
        while not stop.is_set():
            i += 1
            c.execute("UPDATE t SET v = ? WHERE id = ?", (i, (i * 7919) % 2000))
            if i % 5 == 0:
                c.execute("DELETE FROM t WHERE id = ?", ((i * 31) % 2000,))
            if i % 7 == 0:
                c.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (2000 + i, i))
            time.sleep(0.0005)  # a busy application, not a lock-hogging spin loop
        c.close()

    writer = threading.Thread(target=churn)
    writer.start()
    try:
        env.run(backfill.backfill)
    finally:
        stop.set()
        writer.join()
    sync(env)
    assert_in_sync(env, "t")
