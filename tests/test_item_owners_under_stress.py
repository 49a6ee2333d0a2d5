"""Item owners and filters under stress: which row keeps an item, what a
refused row leaves behind, targets that change, tables that join a target,
and row filters that fail on a row's values. Against DynamoDB Local."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Env
from test_cli import cli

from dynasync import backfill, capture, deadletters, syncpass, verify

SLOTS = "CREATE TABLE t (id INTEGER PRIMARY KEY, slot TEXT, v TEXT)"


def sync(env: Env) -> syncpass.PassResult:
    return env.run(syncpass.sync)


def slots(env: Env, source: str = "t") -> dict[str, Any]:
    """Item key -> the id of the row it was written for."""
    return {i["PK"]["S"]: int(i["id"]["N"]) for i in env.items(source)}


def dead(env: Env) -> dict[Any, tuple[str, int]]:
    return {k: (r, n) for k, r, n in env.rows("SELECT k1, reason, attempts FROM _dynasync_dead_letters")}


def slotted(env: Env, *rows: str) -> None:
    env.table("t", SLOTS)
    env.options["t"] = {"partition_key": {"name": "PK", "template": "SLOT#{slot}"}}
    env.write_config()
    if rows:
        env.sql(f"INSERT INTO t VALUES {', '.join(rows)}")
    env.run(capture.init)
    env.run(backfill.backfill)


def test_the_recorded_owner_keeps_its_item_whatever_the_order_of_the_batch(env: Env) -> None:
    slotted(env, "(1, 'b', 'one')", "(2, 'a', 'two')")
    # Row 1 (read first) takes row 2's slot while row 2 stays there: row 2 keeps it.
    env.sql("UPDATE t SET slot = 'a' WHERE id = 1", "UPDATE t SET v = 'two, new' WHERE id = 2")
    sync(env)
    assert slots(env) == {"SLOT#a": 2}
    assert {i["PK"]["S"]: i["v"]["S"] for i in env.items("t")} == {"SLOT#a": "two, new"}
    assert list(dead(env)) == [1]
    # verify --repair decides the same way.
    env.run(verify.verify, repair=True)
    assert slots(env) == {"SLOT#a": 2} and list(dead(env)) == [1]


def test_a_row_refused_an_item_leaves_no_old_item_behind(env: Env) -> None:
    slotted(env, "(1, 'a', 'one')", "(2, 'b', 'two')")
    env.sql("UPDATE t SET slot = 'a' WHERE id = 2")  # row 1 holds slot a
    sync(env)
    # Row 2 is a dead letter; its old item (slot b) belongs to no row any more.
    assert slots(env) == {"SLOT#a": 1}
    env.sql("UPDATE t SET slot = 'c' WHERE id = 1")  # slot a is freed: row 2 gets it
    sync(env)
    sync(env)
    assert slots(env) == {"SLOT#a": 2, "SLOT#c": 1} and dead(env) == {}
    assert env.run(verify.verify).in_sync


def test_freeing_an_item_retries_only_the_rows_refused_that_item(env: Env) -> None:
    slotted(env, "(1, 'a', ''), (2, 'b', ''), (3, 'x', ''), (4, 'y', '')")
    env.sql("UPDATE t SET slot = 'a' WHERE id = 3", "UPDATE t SET slot = 'b' WHERE id = 4")
    sync(env)
    assert set(dead(env)) == {3, 4}
    env.sql("UPDATE t SET slot = 'c' WHERE id = 1")  # frees slot a, not slot b
    sync(env)
    sync(env)
    assert slots(env) == {"SLOT#a": 3, "SLOT#b": 2, "SLOT#c": 1}
    assert dead(env)[4][1] == 1  # row 4 was not retried for nothing
    assert "SLOT#b" in dead(env)[4][0]  # the reason names the item


def test_a_put_dynamodb_refuses_gives_the_overwritten_item_back(env: Env) -> None:
    target = env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, slot TEXT, g)")
    env.options["t"] = {"partition_key": {"name": "PK", "template": "SLOT#{slot}"}}
    env.write_config()
    env.client.create_table(
        TableName=target, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"},
                              {"AttributeName": "g", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[{"IndexName": "byg", "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                                 "Projection": {"ProjectionType": "KEYS_ONLY"}}])
    env.sql("INSERT INTO t VALUES (1, 'a', 'x'), (2, 'b', 'y')")
    env.run(capture.init)
    env.run(backfill.backfill)
    # In one transaction row 1 leaves slot a and row 2 takes it, with a value
    # the index refuses (a number where it keys on a string).
    conn = env.app_conn()
    conn.executescript("BEGIN; UPDATE t SET slot = 'c' WHERE id = 1; "
                       "UPDATE t SET slot = 'a', g = 5 WHERE id = 2; COMMIT;")
    conn.close()
    sync(env)
    sync(env)
    # Row 1's old item at slot a was never overwritten: it must not stay behind.
    assert slots(env) == {"SLOT#c": 1}
    assert list(dead(env)) == [2]
    env.sql("UPDATE t SET g = 'z' WHERE id = 2")
    sync(env)
    assert slots(env) == {"SLOT#a": 2, "SLOT#c": 1} and dead(env) == {}
    assert env.run(verify.verify).in_sync


def test_a_table_given_a_new_target_forgets_the_old_targets_items(env: Env) -> None:
    slotted(env, "(1, 'a', 'one')")
    other = env.table("u", "CREATE TABLE u (id INTEGER PRIMARY KEY, slot TEXT)")
    env.options["u"] = {"partition_key": {"name": "PK", "template": "SLOT#{slot}"}}
    env.write_config()
    env.sql("INSERT INTO u VALUES (7, 'a')")  # u's own item SLOT#a, in its own target
    env.run(capture.init)
    env.run(backfill.backfill, tables=["u"])
    old_target = env.tables["t"]
    env.tables["t"] = other  # t moves into u's target; its row goes meanwhile
    env.write_config()
    env.sql("DELETE FROM t WHERE id = 1")
    sync(env)
    # t's record of SLOT#a was for its old target: u's item with that key stays.
    assert slots(env, "u") == {"SLOT#a": 7}
    env.tables["t"] = old_target
    assert slots(env) == {"SLOT#a": 1}  # the old target is left as it was


def test_a_table_joined_by_another_learns_its_owners_before_the_newcomer_copies(env: Env) -> None:
    shared = env.table("a", "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)")
    env.sql("INSERT INTO a VALUES (1, 'mine')")
    env.run(capture.init)
    env.run(backfill.backfill)
    sync(env)
    env.table("b", "CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)")
    env.tables["b"] = shared  # b joins a's target; its row 1 renders a's item's key
    env.write_config()
    env.sql("INSERT INTO b VALUES (1, 'theirs'), (2, 'new')")
    env.run(capture.init)
    env.run(backfill.backfill, tables=["b"])
    got = {int(i["id"]["N"]): i["v"]["S"] for i in env.items("a")}
    assert got == {1: "mine", 2: "new"}
    assert list(dead(env)) == [1] and "'a'" in dead(env)[1][0]


def test_a_removed_tables_rows_no_longer_hold_items(env: Env) -> None:
    shared = env.table("a", "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)")
    env.table("b", "CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)")
    env.tables["b"] = shared
    for name in ("a", "b"):  # b's items stay tracked on their own
        env.options[name] = {"partition_key": {"name": "PK", "template": "{id}"}}
    env.write_config()
    env.sql("INSERT INTO a VALUES (1, 'a')", "INSERT INTO b VALUES (1, 'b')")
    env.run(capture.init)
    env.run(backfill.backfill)
    sync(env)
    assert [i["v"]["S"] for i in env.items("b")] == ["a"] and list(dead(env)) == [1]
    del env.tables["a"]
    env.write_config()
    env.run(deadletters.retry)
    assert [i["v"]["S"] for i in env.items("b")] == ["b"] and dead(env) == {}


def test_reconcile_clears_the_dead_letters_of_rows_it_writes(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, doc TEXT)")
    env.options["t"] = {"json_columns": ["doc"]}
    env.write_config()
    env.run(capture.init)
    env.sql("INSERT INTO t VALUES (1, '{bad')")
    sync(env)
    assert list(dead(env)) == [1]
    # The row is fixed while capture is off (a restore, a migration with the
    # triggers dropped): the reconcile that follows writes it.
    triggers = [n for (n,) in env.rows("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
    env.sql(*[f'DROP TRIGGER "{n}"' for n in triggers], "UPDATE t SET doc = '{\"ok\": 1}' WHERE id = 1")
    r = sync(env)
    assert r.reconciled == ["t"]
    assert dead(env) == {} and env.items("t")[0]["doc"] == {"M": {"ok": {"N": "1"}}}


def test_a_filter_failing_on_one_rows_values_sets_that_row_aside(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, doc TEXT)")
    env.options["t"] = {"where": "json_extract(doc, '$.live') = 1"}
    env.write_config()
    env.sql("""INSERT INTO t VALUES (1, '{"live": 1}'), (2, '{bad'), (3, '{"live": 0}')""")
    env.run(capture.init)
    env.run(backfill.backfill)  # json_extract fails on row 2: the copy goes on
    assert [i["id"]["N"] for i in env.items("t")] == ["1"]
    assert list(dead(env)) == [2] and "row filter" in dead(env)[2][0]
    env.sql("""INSERT INTO t VALUES (4, '{also bad')""", """UPDATE t SET doc = '{"live": 1}' WHERE id = 3""")
    sync(env)
    assert sorted(i["id"]["N"] for i in env.items("t")) == ["1", "3"] and set(dead(env)) == {2, 4}
    env.sql("""UPDATE t SET doc = '{"live": 1}' WHERE id IN (2, 4)""")
    sync(env)
    assert sorted(i["id"]["N"] for i in env.items("t")) == ["1", "2", "3", "4"] and dead(env) == {}
    env.sql("UPDATE t SET doc = '[' WHERE id = 1")
    r = env.run(verify.verify)  # verify reads past the row too
    assert r.tables[0].unsyncable == 1


@pytest.mark.parametrize("where", [
    "created > date('now', '-1 day')",  # rows would leave with no change to see
    "random() > 0.5",
    "id IN (SELECT id FROM t WHERE doc IS NULL)",  # depends on other rows
    "doc = ?",
])
def test_a_filter_must_depend_on_the_row_alone(env: Env, where: str) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, doc TEXT, created TEXT)")
    env.options["t"] = {"where": where}
    env.write_config()
    p = cli(env, "config", "check")
    assert p.returncode == 1 and "[tables 1] where" in p.stdout and "row alone" in p.stdout, p.stdout
    assert cli(env, "init").returncode != 0


@pytest.mark.parametrize(("constants", "message"), [
    ({"x": float("inf")}, "not a finite number"),
    ({"x": float("nan")}, "not a finite number"),
    ({"x": 1e300}, "outside DynamoDB's number range"),
    ({"": "v"}, "cannot be empty"),
])
def test_constants_dynamodb_cannot_store_are_refused_by_config_check(
    env: Env, constants: dict[str, Any], message: str
) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    env.options["t"] = {"constants": constants}
    env.write_config()
    p = cli(env, "config", "check")
    assert p.returncode == 1 and "[tables 1] constants" in p.stdout and message in p.stdout, p.stdout


def test_a_row_moving_back_while_its_move_is_in_flight_keeps_its_item_recorded(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.write_config(sync={"batch_size": 2})
    slotted(env, "(1, 'a', ''), (2, 'u', ''), (3, 'w', '')")
    env.sql("UPDATE t SET slot = 'b' WHERE id = 1",  # slice 1: row 1 moves a -> b
            "UPDATE t SET v = 'x' WHERE id = 2", "UPDATE t SET v = 'x' WHERE id = 3")
    read_slice, reads = syncpass.changelog.read_slice, []

    def moved_back_after_the_first_read(*args: Any, **kwargs: Any) -> Any:
        if len(reads) == 1:
            # While slice 1 (Delete a, Put b) is in flight, row 1 moves back to
            # slot a; slice 2 reads it there, while its record still names a.
            env.sql("UPDATE t SET slot = 'a' WHERE id = 1")
        reads.append(1)
        return read_slice(*args, **kwargs)

    monkeypatch.setattr(syncpass.changelog, "read_slice", moved_back_after_the_first_read)
    sync(env)
    assert slots(env) == {"SLOT#a": 1, "SLOT#u": 2, "SLOT#w": 3}
    assert env.rows("SELECT item FROM _dynasync_keys WHERE k1 = 1") == [('{"PK":{"S":"SLOT#a"}}',)]
    env.sql("DELETE FROM t WHERE id = 1")
    sync(env)
    assert slots(env) == {"SLOT#u": 2, "SLOT#w": 3}  # no ghost of row 1
