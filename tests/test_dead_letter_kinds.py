"""A dead letter's kind is a column, never read back out of its reason's text:
rewording a reason changes nothing, a collision is retried through the index
on the item it was refused, and dead letters of the older layout are upgraded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fakes import FakeTarget

from dynasync import capture, config, sql, state, syncpass
from dynasync.app import App
from dynasync.writes import DeadLetterKind


def _app(tmp_path: Path, fake: FakeTarget, where: str | None = None) -> App:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE IF NOT EXISTS u (id INTEGER PRIMARY KEY, k TEXT, j TEXT, n REAL)")
    entry = {"source": "u", "target": "target-u", "partition_key": {"name": "PK", "template": "U#{k}"}}
    if where:
        entry["where"] = where
    data = {"source": {"database": str(db)}, "dynamodb": {"create_tables": True, "max_retry_time": 2.0},
            "tables": [entry]}
    app = App(config.parse(data), lambda _cfg: fake)
    capture.init(app)
    return app


def _sql(app: App, *statements: str) -> None:
    with sqlite3.connect(app.config.database, isolation_level=None) as c:
        for s in statements:
            c.execute(s)


def _kinds(app: App) -> dict[object, DeadLetterKind]:
    return {d.k1: d.kind for d in state.dead_letters(app.conn)}


def test_each_dead_letter_carries_its_kind(tmp_path: Path) -> None:
    fake = FakeTarget()
    app = _app(tmp_path, fake, where="json_extract(j, '$.on') IS NOT 0")
    _sql(app, "INSERT INTO u VALUES (1, 'a', NULL, NULL)",
         "INSERT INTO u VALUES (2, 'a', NULL, NULL)",  # renders the item row 1 holds
         "INSERT INTO u VALUES (3, 'c', 'not json', NULL)",  # the filter fails on it
         "INSERT INTO u VALUES (4, 'd', NULL, 1e308)",  # outside DynamoDB's number range
         "INSERT INTO u VALUES (5, 'e', NULL, NULL)")
    fake.fault = lambda requests: (_ for _ in ()).throw(_refuse()) if any(
        r.get("PutRequest", {}).get("Item", {}).get("PK") == {"S": "U#e"} for r in requests) else 0
    syncpass.Syncer(app).run_pass()
    assert _kinds(app) == {2: DeadLetterKind.COLLISION, 3: DeadLetterKind.FILTER,
                           4: DeadLetterKind.UNSTORABLE, 5: DeadLetterKind.REFUSED}
    (collision,) = [d for d in state.dead_letters(app.conn) if d.k1 == 2]
    item = app.conn.execute(f"SELECT item FROM {sql.DEAD_LETTERS} WHERE k1 = 2").fetchone()[0]
    assert item == '{"PK":{"S":"U#a"}}' and "row [1, None]" in collision.reason


def _refuse() -> Exception:
    from dynasync.exceptions import ValidationError

    return ValidationError("One or more parameter values were invalid")


def test_a_reworded_collision_is_still_retried_when_its_item_is_freed(tmp_path: Path) -> None:
    fake = FakeTarget()
    app = _app(tmp_path, fake)
    _sql(app, "INSERT INTO u VALUES (1, 'a', NULL, NULL)", "INSERT INTO u VALUES (2, 'a', NULL, NULL)")
    syncpass.Syncer(app).run_pass()
    assert _kinds(app) == {2: DeadLetterKind.COLLISION}
    _sql(app, f"UPDATE {sql.DEAD_LETTERS} SET reason = 'reworded by a later release'")
    _sql(app, "UPDATE u SET k = 'b' WHERE id = 1")  # row 1 moves away: its old item is freed
    syncpass.Syncer(app).run_pass()  # deletes U#a, and retries the row refused it
    syncpass.Syncer(app).run_pass()
    assert state.dead_letters(app.conn) == []
    assert sorted(i["PK"]["S"] for i in fake.items("target-u").values()) == ["U#a", "U#b"]


def test_a_collision_retry_uses_the_index_on_the_item(tmp_path: Path) -> None:
    app = _app(tmp_path, FakeTarget())
    plan = " ".join(str(r) for r in app.conn.execute(
        "EXPLAIN QUERY PLAN " + sql.DEAD_REQUEUE_COLLISION, ("u", '{"PK":{"S":"U#a"}}')))
    assert "dead_letters_item" in plan and "SCAN" not in plan.split("dead_letters")[0], plan


def test_dead_letters_of_the_older_layout_are_upgraded_with_their_kind(tmp_path: Path) -> None:
    fake = FakeTarget()
    app = _app(tmp_path, fake)
    _sql(app, "INSERT INTO u VALUES (1, 'a', NULL, NULL)", "INSERT INTO u VALUES (2, 'a', NULL, NULL)")
    syncpass.Syncer(app).run_pass()
    app.close()
    # The dead letters table as layout 1 had it, holding what layout 1 wrote.
    item = '{"PK":{"S":"U#a; item x"}}'
    _sql(app, f"DROP TABLE {sql.DEAD_LETTERS}",
         f"CREATE TABLE {sql.DEAD_LETTERS} (tbl TEXT NOT NULL, k1, k2, reason TEXT NOT NULL, seq INTEGER, "
         "first_failed REAL NOT NULL, last_failed REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 1)",
         f"INSERT INTO {sql.DEAD_LETTERS} VALUES ('u', 2, NULL, "
         f"'maps to the same DynamoDB item as row [1, None] of table ''u''; item {item}', 1, 0, 0, 1)",
         f"INSERT INTO {sql.DEAD_LETTERS} VALUES ('u', 3, NULL, 'the row filter fails on this row: x', 1, 0, 0, 1)",
         f"INSERT INTO {sql.DEAD_LETTERS} VALUES ('u', 4, NULL, 'DynamoDB rejected the item: x', 1, 0, 0, 1)",
         f"UPDATE {sql.STATE} SET value = '1' WHERE name = 'schema_version'")
    app = App(app.config, lambda _cfg: fake)
    state.require_installed(app.conn)
    assert _kinds(app) == {2: DeadLetterKind.COLLISION, 3: DeadLetterKind.FILTER, 4: DeadLetterKind.REFUSED}
    assert app.conn.execute(f"SELECT item FROM {sql.DEAD_LETTERS} WHERE k1 = 2").fetchone()[0] == item
    assert app.conn.execute(sql.STATE_GET, ("schema_version",)).fetchone()[0] == sql.SCHEMA_VERSION
    state.require_installed(app.conn)  # once only
