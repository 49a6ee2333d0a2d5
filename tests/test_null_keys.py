"""Rows with a NULL in a primary-key column (legal in SQLite for any primary key
but an INTEGER PRIMARY KEY) can never be items: each is a dead letter while it
exists, found by its exact key through the index, never by a scan of the table."""

from __future__ import annotations

from pathlib import Path

from unit_env import app_conn, make_app

from dynasync import sql, state, syncpass


def test_a_deleted_null_keyed_row_clears_its_dead_letter_while_others_remain(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, "CREATE TABLE t (a TEXT, b TEXT, v TEXT, PRIMARY KEY (a, b))")
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES ('x', NULL, '1'), ('y', NULL, '2'), ('z', 'ok', '3')")
    syncpass.Syncer(app).run_pass()
    assert sorted(d.k1 for d in state.dead_letters(app.conn)) == ["x", "y"]
    c.execute("DELETE FROM t WHERE a = 'x'")
    syncpass.Syncer(app).run_pass()
    assert [d.k1 for d in state.dead_letters(app.conn)] == ["y"]  # x's cleared, though y still has a NULL
    assert len(fake.items("target-t")) == 1


def test_a_null_keyed_row_is_a_dead_letter_even_when_a_template_renders_its_item(tmp_path: Path) -> None:
    from dynasync import config
    from dynasync.app import App
    from dynasync.writes import DeadLetterKind

    app, fake = make_app(tmp_path, "CREATE TABLE t (a TEXT, b TEXT, name TEXT, PRIMARY KEY (a, b))")
    raw = {**app.config.raw, "tables": [{"source": "t", "target": "templated",
                                          "partition_key": {"name": "PK", "template": "N#{name}"}}]}
    app = App(config.parse(raw), lambda _cfg: fake)
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES ('x', NULL, 'one'), ('y', 'z', 'two')")
    syncpass.Syncer(app).run_pass()  # as backfill and verify have it: never an item
    assert [(d.k1, d.kind) for d in state.dead_letters(app.conn)] == [("x", DeadLetterKind.NULL_KEY)]
    assert [i["PK"]["S"] for i in fake.items("templated").values()] == ["N#two"]


def test_a_null_keyed_change_is_looked_up_through_the_index(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, "CREATE TABLE t (a TEXT COLLATE NOCASE, b TEXT, v TEXT, PRIMARY KEY (a, b))")
    for nulls, params in (((False, True), ("x",)), ((True, False), (None, "y")), ((True, True), ())):
        query = sql.null_key_row("t", ("a", "b"), ("NOCASE", "BINARY"), nulls)
        plan = " ".join(str(r) for r in app.conn.execute("EXPLAIN QUERY PLAN " + query, params))
        assert "USING INDEX" in plan or "USING PRIMARY KEY" in plan or "SEARCH" in plan, (nulls, plan)
        assert "SCAN" not in plan, (nulls, plan)
