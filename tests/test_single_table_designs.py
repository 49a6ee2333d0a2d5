"""Real DynamoDB designs. Keys and index attributes from any column,
row filters, safe templates, mapping changes, against DynamoDB Local."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Env
from test_cli import cli

from dynasync import backfill, capture, state, syncpass, verify

USERS = "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, name TEXT, deleted_at TEXT)"
ORDERS = "CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, total REAL)"


def single_table(env: Env, where: str | None = None) -> str:
    """The AWS single-table example: users and their orders in one table, a GSI on email."""
    shared = env.table("users", USERS)
    env.table("orders", ORDERS)
    env.tables["orders"] = shared
    env.options["users"] = {"partition_key": {"name": "PK", "template": "USER#{id}"},
                            "sort_key": {"name": "SK", "template": "PROFILE"},
                            "attributes": {"GSI1PK": "EMAIL#{email}", "GSI1SK": "{name}"},
                            "constants": {"type": "user"}}
    if where:
        env.options["users"]["where"] = where
    env.options["orders"] = {"partition_key": {"name": "PK", "template": "USER#{user_id}"},
                             "sort_key": {"name": "SK", "template": "ORDER#{id}"},
                             "constants": {"type": "order"}}
    env.write_config()
    return shared


def items(env: Env) -> dict[tuple[str, str], dict[str, Any]]:
    return {(i["PK"]["S"], i["SK"]["S"]): i for i in env.items("users")}


def sync(env: Env) -> syncpass.PassResult:
    return env.run(syncpass.sync)


def test_users_and_orders_in_one_table_with_a_gsi_attribute(env: Env) -> None:
    single_table(env)
    env.sql("INSERT INTO users VALUES (1, 'ann@x', 'Ann', NULL), (2, 'bob@x', 'Bob', NULL)",
            "INSERT INTO orders VALUES (10, 1, 9.5), (11, 1, 3.0), (12, 2, 1.25)")
    env.run(capture.init)
    env.run(backfill.backfill)
    got = items(env)
    assert set(got) == {("USER#1", "PROFILE"), ("USER#2", "PROFILE"), ("USER#1", "ORDER#10"),
                        ("USER#1", "ORDER#11"), ("USER#2", "ORDER#12")}
    assert got[("USER#1", "PROFILE")]["GSI1PK"] == {"S": "EMAIL#ann@x"}
    # An order moves to another user; a user's email changes; another's goes NULL (sparse index).
    env.sql("UPDATE orders SET user_id = 2 WHERE id = 10", "UPDATE users SET email = 'ann@new' WHERE id = 1",
            "UPDATE users SET email = NULL WHERE id = 2")
    sync(env)
    got = items(env)
    assert ("USER#1", "ORDER#10") not in got and got[("USER#2", "ORDER#10")]["total"] == {"N": "9.5"}
    assert got[("USER#1", "PROFILE")]["GSI1PK"] == {"S": "EMAIL#ann@new"}
    assert "GSI1PK" not in got[("USER#2", "PROFILE")]
    env.sql("DELETE FROM orders WHERE id = 11", "DELETE FROM users WHERE id = 2")
    sync(env)
    assert set(items(env)) == {("USER#1", "PROFILE"), ("USER#2", "ORDER#10"), ("USER#2", "ORDER#12")}
    assert env.run(verify.verify).in_sync


def test_a_deleted_row_of_a_moved_key_finds_its_item_after_a_restart(env: Env) -> None:
    single_table(env)
    env.sql("INSERT INTO orders VALUES (10, 1, 9.5)")
    env.run(capture.init)
    env.run(backfill.backfill)
    env.sql("UPDATE orders SET user_id = 3 WHERE id = 10")
    sync(env)
    env.sql("DELETE FROM orders WHERE id = 10")  # the row is gone: its item is found by dynasync's record
    sync(env)
    assert items(env) == {}


def test_a_takes_bs_old_key_in_one_transaction(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, slot TEXT, v TEXT)")
    env.options["t"] = {"partition_key": {"name": "PK", "template": "SLOT#{slot}"}}
    env.write_config()
    env.sql("INSERT INTO t VALUES (1, 'a', 'one'), (2, 'b', 'two')")
    env.run(capture.init)
    env.run(backfill.backfill)
    conn = env.app_conn()
    conn.executescript("BEGIN; UPDATE t SET slot = 'c' WHERE id = 2; UPDATE t SET slot = 'b' WHERE id = 1; "
                       "UPDATE t SET slot = 'a' WHERE id = 2; COMMIT;")
    conn.close()
    sync(env)
    assert {i["PK"]["S"]: i["v"]["S"] for i in env.items("t")} == {"SLOT#a": "two", "SLOT#b": "one"}
    assert env.run(verify.verify).in_sync


def test_crash_between_acknowledgement_and_mark_commit_for_a_moved_row(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    single_table(env)
    env.sql("INSERT INTO orders VALUES (10, 1, 9.5)")
    env.run(capture.init)
    env.run(backfill.backfill)
    env.sql("UPDATE orders SET user_id = 2 WHERE id = 10")

    class Crash(BaseException):
        pass

    def crash(*args: Any, **kw: Any) -> None:
        raise Crash()  # DynamoDB has the writes; the mark and the record have not moved

    with monkeypatch.context() as m:
        m.setattr(state, "commit_pass", crash)
        with pytest.raises(Crash):
            sync(env)
    assert set(items(env)) == {("USER#2", "ORDER#10")}
    env.sql("UPDATE orders SET user_id = 3 WHERE id = 10")  # and it moves again before the replay
    sync(env)
    assert set(items(env)) == {("USER#3", "ORDER#10")}
    assert env.run(verify.verify).in_sync


def test_a_row_filter_with_rows_entering_and_leaving(env: Env) -> None:
    single_table(env, where="deleted_at IS NULL")
    env.sql("INSERT INTO users VALUES (1, 'a@x', 'A', NULL), (2, 'b@x', 'B', '2026-01-01')")
    env.run(capture.init)
    env.run(backfill.backfill)
    assert set(items(env)) == {("USER#1", "PROFILE")}  # backfill honours the filter
    env.sql("UPDATE users SET deleted_at = '2026-02-01' WHERE id = 1",  # leaves
            "UPDATE users SET deleted_at = NULL WHERE id = 2")  # enters
    sync(env)
    assert set(items(env)) == {("USER#2", "PROFILE")}
    # verify honours it too: an item of a filtered-out row is extra.
    env.client.put_item(TableName=env.tables["users"], Item={"PK": {"S": "USER#1"}, "SK": {"S": "PROFILE"},
                                                             "type": {"S": "user"}})
    r = env.run(verify.verify, tables=["users"])
    assert r.tables[0].extra == 1
    assert env.run(verify.verify, tables=["users"], repair=True).in_sync
    assert set(items(env)) == {("USER#2", "PROFILE")}


@pytest.mark.parametrize("where", ["1); DROP TABLE users; --", "id IN (SELECT id FROM orders)", "nope > 1",
                                   "deleted_at IS NULL -- soft deletes"])
def test_a_filter_is_one_expression_over_its_table(env: Env, where: str) -> None:
    single_table(env, where=where)
    p = cli(env, "config", "check")
    assert p.returncode == 1 and "[tables 1] where" in p.stdout, p.stdout
    assert cli(env, "init").returncode != 0
    assert env.rows("SELECT count(*) FROM sqlite_master WHERE name = 'users'") == [(1,)]


def test_two_rows_never_share_an_item(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT)")
    env.options["t"] = {"partition_key": {"name": "PK", "template": "{a}#{b}"}}
    env.write_config()
    env.run(capture.init)
    env.sql("INSERT INTO t VALUES (1, 'x#y', 'z')")
    sync(env)
    env.sql("INSERT INTO t VALUES (2, 'x', 'y#z')")  # renders 'x#y#z' too: the template's own separator
    r = sync(env)
    assert r.rejected == 1
    (reason,) = env.rows("SELECT reason FROM _dynasync_dead_letters WHERE k1 = 2")[0]
    assert "same DynamoDB item" in reason and "[1, None]" in reason and "'t'" in reason
    assert [i["id"]["N"] for i in env.items("t")] == ["1"]
    env.sql("UPDATE t SET a = 'w' WHERE id = 1")  # row 1 frees the item: row 2 gets it
    sync(env)
    sync(env)
    assert sorted(i["PK"]["S"] for i in env.items("t")) == ["w#z", "x#y#z"]
    assert env.rows("SELECT count(*) FROM _dynasync_dead_letters") == [(0,)]
    assert env.run(verify.verify).in_sync


def test_verify_repair_keeps_items_whose_values_hold_the_separator(env: Env) -> None:
    env.table("t", "CREATE TABLE t (a TEXT, b TEXT, v TEXT, PRIMARY KEY (a, b))")
    env.options["t"] = {"partition_key": {"name": "PK", "template": "A#{a}"},
                        "sort_key": {"name": "SK", "template": "B#{b}#END"}}
    env.write_config()
    env.sql("INSERT INTO t VALUES ('x#B#y', 'q#END', '1'), ('plain', 'p', '2')")
    env.run(capture.init)
    env.run(backfill.backfill)
    r = env.run(verify.verify, repair=True)
    assert r.in_sync and r.tables[0].extra == 0 and len(env.items("t")) == 2


def test_tables_sharing_a_target_without_constants_keep_each_others_items(env: Env) -> None:
    shared = env.table("a", "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)")
    env.table("b", "CREATE TABLE b (id INTEGER PRIMARY KEY, w TEXT)")
    env.tables["b"] = shared
    for name in ("a", "b"):
        env.options[name] = {"partition_key": {"name": "PK", "template": "{id}"}}
    env.write_config()
    env.sql("INSERT INTO a VALUES (1, 'x')", "INSERT INTO b VALUES (2, 'y')")
    env.run(capture.init)
    env.run(backfill.backfill)
    r = env.run(verify.verify, tables=["a"], repair=True)
    assert r.in_sync and r.tables[0].extra == 0
    assert sorted(i["PK"]["S"] for i in env.items("a")) == ["1", "2"]
    env.sql("INSERT INTO b VALUES (1, 'clash')")  # b's row 1 would overwrite a's item
    assert sync(env).rejected == 1
    assert {i["PK"]["S"]: i.get("v", i.get("w")) for i in env.items("a")}["1"] == {"S": "x"}


def test_a_float_constant_does_not_hide_extra_items(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    env.options["t"] = {"partition_key": {"name": "PK", "template": "T#{id}"}, "constants": {"v": 2.0}}
    env.write_config()
    env.sql("INSERT INTO t VALUES (1)")
    env.run(capture.init)
    env.run(backfill.backfill)
    env.client.put_item(TableName=env.tables["t"], Item={"PK": {"S": "T#9"}, "v": {"N": "2"}})
    r = env.run(verify.verify)
    assert r.tables[0].extra == 1


def test_dotted_column_names_and_huge_real_keys_in_templates(env: Env) -> None:
    env.table("t", 'CREATE TABLE t (id REAL PRIMARY KEY, "a.b" TEXT)')
    env.options["t"] = {"partition_key": {"name": "PK", "template": "{a.b}#{id}"}}
    env.write_config()
    env.sql("INSERT INTO t VALUES (1e19, 'x'), (2.5, 'y')")
    env.run(capture.init)
    env.run(backfill.backfill)
    assert sorted(i["PK"]["S"] for i in env.items("t")) == ["x#1e+19", "y#2.5"]
    assert env.run(verify.verify, repair=True).in_sync


def test_a_mapping_change_and_restart_leaves_no_ghost(env: Env) -> None:
    single_table(env)
    env.sql("INSERT INTO users VALUES (1, 'a@x', 'A', NULL), (2, 'b@x', 'B', NULL)",
            "INSERT INTO orders VALUES (10, 1, 9.5)")
    env.run(capture.init)
    env.run(backfill.backfill)
    env.options["users"].update({"partition_key": {"name": "PK", "template": "U#{id}"},
                                 "attributes": {"BYMAIL": "{email}"}, "where": "id > 1",
                                 "rename": {"name": "fullName"}})
    env.write_config()
    r = sync(env)  # a restart: the new config
    assert r.reconciled == ["users"]
    got = items(env)
    assert set(got) == {("U#2", "PROFILE"), ("USER#1", "ORDER#10")}
    assert got[("U#2", "PROFILE")]["BYMAIL"] == {"S": "b@x"} and got[("U#2", "PROFILE")]["fullName"] == {"S": "B"}
    assert "GSI1PK" not in got[("U#2", "PROFILE")]
    assert sync(env).reconciled == []
    assert env.run(verify.verify).in_sync


@pytest.mark.parametrize(("option", "value", "message"), [
    ("partition_key", {"name": "PK", "template": "U#{nope}"}, "partition_key names column 'nope'"),
    ("sort_key", {"name": "SK", "template": "X#{id}"}, "sort_key needs a partition_key"),
    ("partition_key", {"name": "PK", "template": "A#{id}{email}"}, "cannot be told apart"),
    ("attributes", {"G": "{missing}"}, "attributes names column 'missing'"),
    ("rename", {"name": "email"}, "would be written as 'email'"),
    ("constants", {"email": "x"}, "constant 'email' would overwrite"),
])
def test_config_check_and_init_report_every_mapping_problem_with_its_line(
    env: Env, option: str, value: Any, message: str
) -> None:
    env.table("users", USERS)
    env.options["users"] = {option: value}
    env.write_config()
    p = cli(env, "config", "check")
    assert p.returncode == 1 and message in p.stdout and f"[tables 1] {option}" in p.stdout, p.stdout
    lines = env.config_path.read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if text.startswith(option))
    assert f":{line}: [tables 1]" in p.stdout
    assert cli(env, "init").returncode != 0  # nothing passes init to fail later


def test_config_check_lists_every_problem_of_one_table_not_only_the_first(env: Env) -> None:
    env.table("users", USERS)
    env.options["users"] = {"where": "nope > 1", "attributes": {"G": "{missing}"},
                            "rename": {"name": "email"}, "exclude_columns": ["gone"]}
    env.write_config()
    p = cli(env, "config", "check")
    assert p.returncode == 1, p.stdout
    for option, message in [("where", "nope"), ("attributes", "names column 'missing'"),
                            ("rename", "would be written as 'email'"), ("exclude_columns", "names column 'gone'")]:
        assert any(f"[tables 1] {option}" in line and message in line for line in p.stdout.splitlines()), p.stdout
    assert "4 problem(s)" in p.stdout, p.stdout


NOTES = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, meta TEXT, expires REAL, owner TEXT)"


@pytest.mark.parametrize(("before", "after", "expect"), [
    ({}, {"columns": ["body"]}, {"id": {"N": "1"}, "body": {"S": "hello"}}),
    ({"exclude_columns": ["meta"]}, {}, None),
    ({"constants": {"type": "note"}}, {"constants": {"kind": "n"}}, None),
    ({}, {"json_columns": ["meta"]}, None),
    ({}, {"ttl_column": "expires"}, None),
    ({"rename": {"owner": "by"}}, {"rename": {"owner": "author"}}, None),
    ({"partition_key": {"name": "PK", "template": "N#{id}"}},
     {"partition_key": {"name": "PK", "template": "N#{owner}#{id}"}}, None),
    ({"partition_key": {"name": "PK", "template": "N#{id}"}},
     {"partition_key": {"name": "PK", "template": "N#{id}"}, "sort_key": {"name": "SK", "template": "{owner}"}},
     None),
])
def test_every_mapping_option_changed_and_restarted_leaves_dynamodb_equal_to_the_new_mapping(
    env: Env, before: dict[str, Any], after: dict[str, Any], expect: dict[str, Any] | None
) -> None:
    env.table("notes", NOTES)
    env.options["notes"] = before
    env.write_config()
    env.sql("INSERT INTO notes VALUES (1, 'hello', '{\"a\": [1, 2.5]}', 1900000000.5, 'ann'), "
            "(2, 'world', '[]', NULL, 'bob')")
    env.run(capture.init)
    env.run(backfill.backfill)
    if "sort_key" in after:  # a new key schema needs a new DynamoDB table
        env.table("notes")
    env.options["notes"] = after
    env.write_config()
    sync(env)  # a restart under the new mapping
    check = env.run(verify.verify)
    assert check.in_sync, check
    got = {int(i["id"]["N"]): i for i in env.items("notes")} if "partition_key" not in after else {
        int(i["PK"]["S"].rsplit("#", 1)[1]): i for i in env.items("notes")}
    assert sorted(got) == [1, 2]  # no ghost of the old mapping's items
    if expect is not None:
        assert got[1] == expect
    if "json_columns" in after:
        assert got[1]["meta"] == {"M": {"a": {"L": [{"N": "1"}, {"N": "2.5"}]}}}
    if "ttl_column" in after:
        assert got[1]["expires"] == {"N": "1900000000"}
    if "constants" in after:
        assert got[1]["kind"] == {"S": "n"} and "type" not in got[1]
    if "rename" in after:
        assert got[1]["author"] == {"S": "ann"} and "by" not in got[1] and "owner" not in got[1]
    if "exclude_columns" in before:
        assert got[1]["meta"] == {"S": '{"a": [1, 2.5]}'}
