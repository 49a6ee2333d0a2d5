"""The exact trigger SQL is pinned here, and exercised against real SQLite."""

from __future__ import annotations

import sqlite3

import pytest

from dynasync import sql as triggers
from dynasync.schema import inspect
from dynasync.sql import Conflict, Term, TriggerSpec, trigger_sql

PINNED_SIMPLE = {
    "_dynasync_ins_users": (
        'CREATE TRIGGER "_dynasync_ins_users" AFTER INSERT ON "users" BEGIN INSERT INTO '
        "_dynasync_changelog (tbl, op, k1, k2) VALUES ('users', 'I', NEW.\"id\", NULL); END"
    ),
    "_dynasync_upd_users": (
        'CREATE TRIGGER "_dynasync_upd_users" AFTER UPDATE ON "users" BEGIN INSERT INTO '
        "_dynasync_changelog (tbl, op, k1, k2) VALUES ('users', 'U', NEW.\"id\", NULL); END"
    ),
    "_dynasync_key_users": (
        'CREATE TRIGGER "_dynasync_key_users" AFTER UPDATE OF "id" ON "users" WHEN OLD."id" IS NOT '
        'NEW."id" COLLATE BINARY BEGIN INSERT INTO _dynasync_changelog (tbl, op, k1, k2) VALUES (\'users\', \'K\', '
        'OLD."id", NULL); END'
    ),
    "_dynasync_del_users": (
        'CREATE TRIGGER "_dynasync_del_users" AFTER DELETE ON "users" BEGIN INSERT INTO '
        "_dynasync_changelog (tbl, op, k1, k2) VALUES ('users', 'D', OLD.\"id\", NULL); END"
    ),
}

PINNED_REPLACE = {
    "_dynasync_rep_users": (
        'CREATE TRIGGER "_dynasync_rep_users" BEFORE INSERT ON "users" BEGIN INSERT INTO '
        "_dynasync_changelog (tbl, op, k1, k2) SELECT 'users', 'R', \"id\", NULL FROM \"users\" "
        'WHERE "email" = NEW."email" COLLATE BINARY; END'
    ),
    "_dynasync_repu_users": (
        'CREATE TRIGGER "_dynasync_repu_users" BEFORE UPDATE OF "email" ON "users" BEGIN INSERT INTO '
        "_dynasync_changelog (tbl, op, k1, k2) SELECT 'users', 'R', \"id\", NULL FROM \"users\" "
        'WHERE (OLD."email" IS NOT NEW."email" COLLATE BINARY) AND "email" = NEW."email" COLLATE BINARY; END'
    ),
}


def test_pinned_sql_single_key() -> None:
    assert trigger_sql(TriggerSpec("users", ("id",))) == PINNED_SIMPLE


def test_pinned_sql_unique_index() -> None:
    email = Conflict("users_email", (Term('"email"', "email", "BINARY"),))
    assert trigger_sql(TriggerSpec("users", ("id",), (email,))) == {**PINNED_SIMPLE, **PINNED_REPLACE}


def test_pinned_sql_rowid_key_and_index_shapes() -> None:
    # An INTEGER PRIMARY KEY changes under UPDATE ... SET rowid, which names no column.
    key = trigger_sql(TriggerSpec("t", ("id",), rowid_key=True))["_dynasync_key_t"]
    assert key.startswith('CREATE TRIGGER "_dynasync_key_t" AFTER UPDATE ON "t" WHEN OLD."id" IS NOT NEW."id" '
                          "COLLATE BINARY BEGIN")
    # A partial NOCASE expression index, compared as the index compares, evaluated over NEW.
    expr = Conflict("t_lower", (Term("lower(e)", None, "NOCASE", "expression", ("e",)),), "d > 0", ("d",))
    rowid = Conflict("rowid", (Term("rowid", "rowid", "BINARY", "rowid"),))
    out = trigger_sql(TriggerSpec("t", ("k",), (expr, rowid)))
    assert out["_dynasync_rep_t"] == (
        'CREATE TRIGGER "_dynasync_rep_t" BEFORE INSERT ON "t" BEGIN '
        "INSERT INTO _dynasync_changelog (tbl, op, k1, k2) SELECT 't', 'R', \"k\", NULL FROM \"t\" WHERE "
        'lower(e) = (CASE WHEN (SELECT (d > 0) FROM (SELECT NEW."d" AS "d")) THEN '
        '(SELECT lower(e) FROM (SELECT NEW."e" AS "e")) END) COLLATE NOCASE AND (d > 0); '
        "INSERT INTO _dynasync_changelog (tbl, op, k1, k2) SELECT 't', 'R', \"k\", NULL FROM \"t\" WHERE "
        'rowid = NEW.rowid COLLATE BINARY; END'
    )
    # An expression cannot be told unchanged cheaply, so the UPDATE trigger has no WHEN.
    assert out["_dynasync_repu_t"].startswith('CREATE TRIGGER "_dynasync_repu_t" BEFORE UPDATE ON "t" BEGIN ')


def test_pinned_sql_composite_key() -> None:
    sql = trigger_sql(TriggerSpec("orders", ("cust", "no")))
    assert sql["_dynasync_ins_orders"] == (
        'CREATE TRIGGER "_dynasync_ins_orders" AFTER INSERT ON "orders" BEGIN INSERT INTO '
        "_dynasync_changelog (tbl, op, k1, k2) VALUES ('orders', 'I', NEW.\"cust\", NEW.\"no\"); END"
    )
    assert sql["_dynasync_key_orders"] == (
        'CREATE TRIGGER "_dynasync_key_orders" AFTER UPDATE OF "cust", "no" ON "orders" WHEN '
        'OLD."cust" IS NOT NEW."cust" COLLATE BINARY OR OLD."no" IS NOT NEW."no" COLLATE BINARY BEGIN INSERT INTO _dynasync_changelog '
        "(tbl, op, k1, k2) VALUES ('orders', 'K', OLD.\"cust\", OLD.\"no\"); END"
    )


def test_identifiers_are_quoted_and_cannot_inject() -> None:
    evil = "x\"; DROP TABLE victims; --'"
    conn = sqlite3.connect(":memory:")
    col = triggers.quote_ident('k e"y')
    conn.execute(f"CREATE TABLE {triggers.quote_ident(evil)} ({col} TEXT PRIMARY KEY)")
    conn.execute("CREATE TABLE victims (id INTEGER PRIMARY KEY)")
    for stmt in triggers.CREATE_OWN_TABLES:
        conn.execute(stmt)
    for stmt in trigger_sql(inspect(conn, evil).trigger_spec).values():
        conn.execute(stmt)
    conn.execute(f"INSERT INTO {triggers.quote_ident(evil)} VALUES ('a')")
    assert conn.execute("SELECT tbl, op, k1 FROM _dynasync_changelog").fetchall() == [(evil, "I", "a")]
    assert conn.execute("SELECT count(*) FROM victims").fetchone() == (0,)


def _db(ddl: str) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute(ddl)
    for stmt in triggers.CREATE_OWN_TABLES:
        conn.execute(stmt)
    table = ddl.split()[2]
    for stmt in trigger_sql(inspect(conn, table).trigger_spec).values():
        conn.execute(stmt)
    return conn


def _log(conn: sqlite3.Connection) -> list[tuple[str, object, object]]:
    return conn.execute("SELECT op, k1, k2 FROM _dynasync_changelog ORDER BY seq").fetchall()


def test_triggers_log_insert_update_delete_and_key_change() -> None:
    conn = _db("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t VALUES (1, 'a')")
    conn.execute("UPDATE t SET v = 'b' WHERE id = 1")
    conn.execute("UPDATE t SET id = 2 WHERE id = 1")
    conn.execute("DELETE FROM t")
    log = _log(conn)
    # Both rows of the key change come from one statement; their order is SQLite's business.
    assert log[:2] == [("I", 1, None), ("U", 1, None)]
    assert sorted(log[2:4]) == [("K", 1, None), ("U", 2, None)]
    assert log[4:] == [("D", 2, None)]


def test_replace_through_unique_index_logs_the_victim() -> None:
    conn = _db("CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT UNIQUE)")
    conn.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    conn.execute("DELETE FROM _dynasync_changelog")
    conn.execute("INSERT OR REPLACE INTO t VALUES (3, 'a')")  # deletes row 1 without a DELETE trigger
    assert ("R", 1, None) in _log(conn) and ("I", 3, None) in _log(conn)
    conn.execute("DELETE FROM _dynasync_changelog")
    conn.execute("UPDATE OR REPLACE t SET email = 'b' WHERE id = 3")  # deletes row 2
    assert ("R", 2, None) in _log(conn)


def test_triggers_work_with_trusted_schema_off() -> None:
    conn = _db("CREATE TABLE t (id TEXT PRIMARY KEY, email TEXT UNIQUE)")
    conn.execute("PRAGMA trusted_schema = OFF")
    conn.execute("INSERT INTO t VALUES ('x', 'e')")
    conn.execute("INSERT OR REPLACE INTO t VALUES ('y', 'e')")
    assert ("I", "y", None) in _log(conn)


@pytest.mark.parametrize("bad", [(), ("a", "b", "c")])
def test_key_width_is_checked(bad: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        trigger_sql(TriggerSpec("t", bad))
