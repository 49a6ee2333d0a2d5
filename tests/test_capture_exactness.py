"""Capture and key identity: each class of loss or ghost the README's
promise must exclude, against DynamoDB Local. Classes 1, 2, 4, 5, 6 and 10."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from conftest import Env
from equality import assert_in_sync

from dynasync import backfill, capture, schema, sql, syncpass, verify


def setup(env: Env, ddl: str, *more: str, name: str = "t") -> None:
    env.table(name, ddl)
    for stmt in more:
        env.sql(stmt)
    env.run(capture.init)


def sync(env: Env) -> syncpass.PassResult:
    return env.run(syncpass.sync)


def keys(env: Env, attr: str = "id", name: str = "t") -> list[Any]:
    return sorted(next(iter(i[attr].values())) for i in env.items(name))


# --- collations: keys are exact bytes, as DynamoDB compares them -----------


@pytest.mark.parametrize("collation", ["NOCASE", "RTRIM"])
def test_collated_key_changed_only_in_case_or_spaces_leaves_no_ghost(env: Env, collation: str) -> None:
    setup(env, f"CREATE TABLE t (id TEXT PRIMARY KEY COLLATE {collation}, v TEXT)")
    env.sql("INSERT INTO t VALUES ('a', 'x')")
    sync(env)
    new = "A" if collation == "NOCASE" else "a "
    env.sql(f"UPDATE t SET id = '{new}' WHERE id = 'a'")  # a key change SQLite calls no change
    sync(env)
    assert keys(env) == [new]
    assert_in_sync(env, "t", {"id": "S"})


def test_collated_key_replace_and_delete_insert_in_one_slice(env: Env) -> None:
    setup(env, "CREATE TABLE t (id TEXT PRIMARY KEY COLLATE NOCASE, v TEXT)")
    env.sql("INSERT INTO t VALUES ('a', 'x'), ('b', 'y')")
    sync(env)
    env.sql("INSERT OR REPLACE INTO t VALUES ('A', 'new')")  # deletes 'a' through the NOCASE key
    env.sql("DELETE FROM t WHERE id = 'b'", "INSERT INTO t VALUES ('B', 'z')")
    sync(env)
    assert keys(env) == ["A", "B"]
    assert_in_sync(env, "t", {"id": "S"})


def test_verify_sees_a_ghost_that_differs_only_in_case(env: Env) -> None:
    setup(env, "CREATE TABLE t (id TEXT PRIMARY KEY COLLATE NOCASE, v TEXT)")
    env.sql("INSERT INTO t VALUES ('A', 'x')")
    sync(env)
    env.client.put_item(TableName=env.tables["t"], Item={"id": {"S": "a"}, "v": {"S": "x"}})
    r = env.run(verify.verify)
    assert not r.in_sync and r.tables[0].extra == 1
    assert env.run(verify.verify, repair=True).in_sync
    assert keys(env) == ["A"]


def test_replace_victim_with_a_nocase_key_through_a_unique_index(env: Env) -> None:
    # The victim's key differs from the new row's only in case: it must still be logged.
    setup(env, "CREATE TABLE t (id TEXT PRIMARY KEY COLLATE NOCASE, email TEXT UNIQUE)")
    env.sql("INSERT INTO t VALUES ('a', 'e1')")
    sync(env)
    env.sql("PRAGMA recursive_triggers = OFF", "REPLACE INTO t VALUES ('A', 'e1')")
    sync(env)
    assert keys(env) == ["A"]


# --- untyped keys: every round trip finds the row that produced the item ---


def test_untyped_key_holding_text_survives_repair_and_reconcile(env: Env) -> None:
    setup(env, "CREATE TABLE t (k PRIMARY KEY, v)")  # BLOB affinity: a B key, here holding TEXT
    env.sql("INSERT INTO t VALUES ('abc', 1), (x'00ff', 2), ('ünï', 3)")
    env.run(backfill.backfill)
    assert sorted(i["k"]["B"] for i in env.items("t")) == sorted([b"abc", b"\x00\xff", "ünï".encode()])
    r = env.run(verify.verify, repair=True)
    assert r.in_sync and r.tables[0].extra == 0
    assert len(env.items("t")) == 3
    env.sql("ALTER TABLE t ADD COLUMN flag INTEGER DEFAULT 0")  # a routine migration: reconciled
    assert sync(env).reconciled == ["t"]
    assert len(env.items("t")) == 3
    assert_in_sync(env, "t", {"k": "B"})


@pytest.mark.parametrize("ddl", ["CREATE TABLE t (k REAL PRIMARY KEY, v)",
                                 "CREATE TABLE t (k NUMERIC PRIMARY KEY, v)"])
def test_numeric_keys_round_trip_through_verify(env: Env, ddl: str) -> None:
    setup(env, ddl)
    env.sql("INSERT INTO t VALUES (1, 'a'), (2.5, 'b'), (1e20, 'c'), (-7, 'd')")
    env.run(backfill.backfill)
    r = env.run(verify.verify, repair=True)
    assert r.in_sync and r.tables[0].extra == 0 and len(env.items("t")) == 4


# --- capture re-armed (rebuilt, renamed away, new index) reconciles ---------


def test_migration_that_renames_the_table_away_is_reconciled(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    env.sql("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    env.run(backfill.backfill)
    # The triggers follow the old table; the new one is filled without capture.
    env.sql("ALTER TABLE t RENAME TO t_old",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
            "INSERT INTO t SELECT id, upper(v) FROM t_old",
            "INSERT INTO t VALUES (3, 'C')")
    r = sync(env)
    assert r.reconciled == ["t"]
    assert_in_sync(env, "t")
    env.sql("DROP TABLE t_old", "INSERT INTO t VALUES (4, 'd')")
    sync(env)
    assert_in_sync(env, "t")


def test_new_unique_index_used_by_replace_before_the_next_pass(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT)")
    env.sql("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    sync(env)
    env.sql("CREATE UNIQUE INDEX t_email ON t (email)",
            "INSERT OR REPLACE INTO t VALUES (3, 'a')")  # deletes row 1 before capture knows the index
    r = sync(env)
    assert r.reconciled == ["t"]
    assert keys(env) == ["2", "3"]


# --- capture gaps: REPLACE and key changes SQLite does not announce ---------


def test_replace_through_a_unique_index_with_its_own_collation(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT)",
          "CREATE UNIQUE INDEX t_email ON t (email COLLATE NOCASE)")
    env.sql("INSERT INTO t VALUES (1, 'a@x'), (2, 'b@x')")
    sync(env)
    env.sql("INSERT OR REPLACE INTO t VALUES (3, 'A@X')", "UPDATE OR REPLACE t SET email = 'B@x' WHERE id = 3")
    sync(env)
    assert keys(env) == ["3"]
    assert_in_sync(env, "t")


def test_update_or_replace_through_a_unique_generated_column(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT, norm TEXT AS (lower(email)) STORED)",
          "CREATE UNIQUE INDEX t_norm ON t (norm)")
    env.sql("INSERT INTO t (id, email) VALUES (1, 'a'), (2, 'b')")
    sync(env)
    env.sql("UPDATE OR REPLACE t SET email = 'A' WHERE id = 2")  # norm 'a' deletes row 1
    sync(env)
    assert keys(env) == ["2"]
    assert_in_sync(env, "t")


def test_update_set_rowid_changes_an_integer_primary_key(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    env.sql("INSERT INTO t VALUES (1, 'a')")
    sync(env)
    env.sql("UPDATE t SET rowid = 5 WHERE id = 1")
    sync(env)
    assert keys(env) == ["5"]


def test_replace_through_a_rowid_conflict(env: Env) -> None:
    setup(env, "CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT)")
    env.sql("INSERT INTO t (rowid, id, v) VALUES (7, 'a', 'x')")
    sync(env)
    env.sql("INSERT OR REPLACE INTO t (rowid, id, v) VALUES (7, 'b', 'y')")  # deletes 'a'
    env.sql("INSERT INTO t (rowid, id, v) VALUES (8, 'c', 'z')",
            "UPDATE OR REPLACE t SET rowid = 8 WHERE id = 'b'")  # deletes 'c'
    sync(env)
    assert keys(env) == ["b"]
    assert_in_sync(env, "t", {"id": "S"})


def test_partial_and_expression_unique_indexes_capture_their_victims(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT, live INTEGER)",
          "CREATE UNIQUE INDEX t_live ON t (email) WHERE live = 1",
          "CREATE UNIQUE INDEX t_lower ON t (lower(email), live)")
    env.sql("INSERT INTO t VALUES (1, 'a', 1), (2, 'a', 0), (3, 'b', 0)")
    sync(env)
    env.sql("INSERT OR REPLACE INTO t VALUES (4, 'a', 1)")  # deletes 1 through the partial index
    env.sql("INSERT OR REPLACE INTO t VALUES (5, 'B', 0)")  # deletes 3 through lower(email)
    sync(env)
    assert keys(env) == ["2", "4", "5"]
    assert_in_sync(env, "t")


# --- generated columns are attributes like any column -----------------------


def test_generated_columns_are_synced_and_their_changes_reconciled(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, "
               "twice INTEGER AS (a * 2) STORED, thrice INTEGER AS (a * 3) VIRTUAL)")
    env.sql("INSERT INTO t (id, a) VALUES (1, 1), (2, 2)")
    sync(env)
    item = {i["id"]["N"]: i for i in env.items("t")}
    assert item["2"]["twice"] == {"N": "4"} and item["2"]["thrice"] == {"N": "6"}
    env.sql("ALTER TABLE t ADD COLUMN plus INTEGER AS (a + 100) VIRTUAL")  # no trigger fires
    assert sync(env).reconciled == ["t"]
    assert {i["id"]["N"]: i["plus"]["N"] for i in env.items("t")} == {"1": "101", "2": "102"}
    env.sql("ALTER TABLE t DROP COLUMN thrice")
    assert sync(env).reconciled == ["t"]
    assert_in_sync(env, "t")
    assert all("thrice" not in i for i in env.items("t"))


def test_generated_columns_are_in_the_shape(tmp_path: Any) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a, g AS (a + 1), s AS (a * 2) STORED)")
    s = schema.inspect(conn, "t")
    # A generated column's shape is its definition: defined anew, it is a reshape.
    assert dict(s.shape) == {"a": None, "g": "GENERATED VIRTUAL: g AS (a + 1)",
                             "s": "GENERATED STORED: s AS (a * 2) STORED"}
    assert s.columns == ("id", "a", "g", "s") and s.rowid_key


# --- every index shape is searched through its index, not by a scan --------


def _vm_steps_per_insert(ddl: list[str], rows: int) -> float:
    """SQLite virtual-machine steps per captured INSERT OR REPLACE: flat when the
    trigger's victim search uses the index, growing with the table when it scans."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for stmt in [*ddl, *sql.CREATE_OWN_TABLES]:
        conn.execute(stmt)
    for stmt in sql.trigger_sql(schema.inspect(conn, "t").trigger_spec).values():
        conn.execute(stmt)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t (id, email, live) VALUES (?, ?, 1)", [(i, f"e{i}") for i in range(rows)])
    conn.execute("COMMIT")
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 100)
    for i in range(100):
        conn.execute("INSERT OR REPLACE INTO t (id, email, live) VALUES (?, ?, 1)", (rows + i, f"E{i}x"))
        conn.execute("UPDATE OR REPLACE t SET email = ? WHERE id = ?", (f"u{i}", rows + i))
    return steps[0] / 100


@pytest.mark.parametrize("index", [
    "CREATE UNIQUE INDEX t_e ON t (email COLLATE NOCASE)",
    "CREATE UNIQUE INDEX t_e ON t (email) WHERE live = 1",
    "CREATE UNIQUE INDEX t_e ON t (lower(email))",
    "CREATE UNIQUE INDEX t_e ON t (norm)",
])
def test_victim_search_cost_does_not_grow_with_the_table(index: str) -> None:
    ddl = ["CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT COLLATE RTRIM, live INTEGER, "
           "norm TEXT AS (lower(email)))", index]
    small, large = _vm_steps_per_insert(ddl, 1_000), _vm_steps_per_insert(ddl, 30_000)
    assert large < small * 1.5, (small, large)



def test_capture_of_an_expression_index_never_blocks_dropping_another_column(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT, \"Old Col\" TEXT, v TEXT)",
          "CREATE UNIQUE INDEX t_lower ON t (lower(\"email\"))")
    spec = schema.inspect(sqlite3.connect(env.db_path), "t").trigger_spec
    assert [t.uses for c in spec.conflicts for t in c.terms if t.kind == "expression"] == [("email",)]
    env.sql("INSERT INTO t VALUES (1, 'a', 'x', 'y')")
    sync(env)
    env.sql('ALTER TABLE t DROP COLUMN "Old Col"', "ALTER TABLE t DROP COLUMN v")  # the migration must not fail
    env.sql("INSERT OR REPLACE INTO t VALUES (2, 'A')")  # and capture still follows the index
    sync(env)
    assert keys(env) == ["2"]
    assert_in_sync(env, "t")


# --- found by review: index and column SQL read exactly ---------------------------


def test_partial_expression_index_never_fails_the_applications_write(env: Env) -> None:
    setup(env, "CREATE TABLE t (k TEXT PRIMARY KEY, d TEXT, n INTEGER)",
          "CREATE UNIQUE INDEX t_j ON t (json_extract(d, '$.id')) WHERE json_valid(d)")
    env.sql("INSERT INTO t VALUES ('x', 'not json', 0)",  # SQLite never evaluates the index expression here
            "UPDATE t SET n = 1 WHERE k = 'x'",
            "INSERT INTO t VALUES ('a', '{\"id\": 1}', 0)")
    sync(env)
    env.sql("INSERT OR REPLACE INTO t VALUES ('b', '{\"id\": 1}', 0)")  # deletes 'a' through the index
    sync(env)
    assert keys(env, "k") == ["b", "x"]


def test_column_collation_under_a_binary_primary_key(env: Env) -> None:
    setup(env, "CREATE TABLE t (id TEXT COLLATE NOCASE, v TEXT, PRIMARY KEY (id COLLATE BINARY))")
    env.sql("INSERT INTO t VALUES ('a', '1'), ('A', '2')")
    assert sync(env).rejected == 0
    env.sql("DELETE FROM t WHERE id = 'a' COLLATE BINARY")
    sync(env)
    assert keys(env) == ["A"]
    assert env.run(verify.verify).in_sync


@pytest.mark.parametrize(("index", "rows", "replace", "left"), [
    ("lower(a)||b", [("x", "ab", "c")], ("y", "a", "bc"), ["y"]),
    ("CASE WHEN b>0 THEN a ELSE k END", [("v", "X", 1)], ("X", "zzz", 0), ["X"]),
    ("+a", [("p", "q", 0)], ("r", "q", 1), ["r"]),
])
def test_every_column_an_index_expression_uses_is_found(
    env: Env, index: str, rows: list[tuple[Any, ...]], replace: tuple[Any, ...], left: list[str]
) -> None:
    setup(env, "CREATE TABLE t (k TEXT PRIMARY KEY, a TEXT, b)", f"CREATE UNIQUE INDEX t_e ON t ({index})")
    conn = env.app_conn()
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    conn.close()
    sync(env)
    conn = env.app_conn()
    conn.execute("INSERT OR REPLACE INTO t VALUES (?, ?, ?)", replace)
    conn.close()
    sync(env)
    assert keys(env, "k") == left
    # Only the victims are logged, never every row.
    assert env.rows("SELECT count(*) FROM _dynasync_changelog WHERE op = 'R'")[0][0] <= 1


def test_victim_with_id_minus_one_in_an_integer_primary_key_table(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, b TEXT UNIQUE)")
    env.sql("INSERT INTO t VALUES (-1, 'x')")
    sync(env)
    env.sql("INSERT OR REPLACE INTO t (b) VALUES ('x')")  # NEW.id reads -1 in the BEFORE trigger
    sync(env)
    assert keys(env) == [str(r[0]) for r in env.rows("SELECT id FROM t")]


def test_generated_column_defined_anew_is_reconciled(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, g TEXT AS (lower(a)))")
    env.sql("INSERT INTO t (id, a) VALUES (1, 'Hello')")
    sync(env)
    env.sql("ALTER TABLE t DROP COLUMN g", "ALTER TABLE t ADD COLUMN g TEXT AS (upper(a))")
    assert sync(env).reconciled == ["t"]
    assert env.items("t")[0]["g"] == {"S": "HELLO"}


def test_comments_in_an_index_definition(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER)",
          "CREATE UNIQUE INDEX t_a ON t (a) -- one per live row\n WHERE b > 0 -- live")
    env.sql("INSERT INTO t VALUES (1, 'x', 1)")
    sync(env)
    env.sql("INSERT OR REPLACE INTO t VALUES (2, 'x', 1)")
    sync(env)
    assert keys(env) == ["2"]
    (trigger,) = env.rows("SELECT sql FROM sqlite_master WHERE name = '_dynasync_rep_t'")
    assert "--" not in trigger[0] and "(b > 0)" in trigger[0]


def test_dropping_a_column_named_like_a_function_the_index_calls(env: Env) -> None:
    setup(env, "CREATE TABLE t (id INTEGER PRIMARY KEY, created TEXT, date TEXT, lower TEXT)",
          "CREATE UNIQUE INDEX t_d ON t (date(created), CAST(lower(created) AS text))")
    env.sql("INSERT INTO t VALUES (1, '2026-01-01', 'x', 'y')")
    sync(env)
    env.sql("ALTER TABLE t DROP COLUMN date", "ALTER TABLE t DROP COLUMN lower")  # works without dynasync
    sync(env)
    assert_in_sync(env, "t")


@pytest.mark.parametrize("expression", ["a || ''", "+a", "a + b", "coalesce(a, b)"])
def test_expression_shapes_search_through_the_index(expression: str) -> None:
    ddl = ["CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT, live INTEGER, a TEXT, b INTEGER, "
           "norm TEXT AS (lower(email)))", f"CREATE UNIQUE INDEX t_e ON t ({expression}, email)"]
    small, large = _vm_steps_per_insert(ddl, 1_000), _vm_steps_per_insert(ddl, 30_000)
    assert large < small * 1.5, (small, large)
