"""Per-table mapping options: columns, rename, JSON, key templates, constants, TTL."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from dynasync import config
from dynasync.exceptions import ConfigError, Poison, SourceError
from dynasync.items import ItemMap, build
from dynasync.schema import inspect

DDL = ("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, secret TEXT, prefs TEXT, "
       "expires REAL, name TEXT)")


def tmap(ddl: str = DDL, **options: Any) -> ItemMap:
    conn = sqlite3.connect(":memory:")
    conn.execute(ddl)
    name = ddl.split()[2]
    cfg = config.parse({"source": {"database": "x"},
                        "tables": [{"source": name, "target": "target-t", **options}]})
    return build(cfg.tables[0], inspect(conn, name))


def test_columns_exclude_rename_json_ttl_constants() -> None:
    m = tmap(exclude_columns=["secret"], rename={"email": "emailAddress", "id": "userId"},
             json_columns=["prefs"], ttl_column="expires", constants={"type": "user", "v": 2, "live": True})
    cols = ["id", "email", "secret", "prefs", "expires", "name"]
    item = m.item(cols, [7, "a@x", "pw", '{"theme": "dark", "n": [1, 2.5, null, true]}', 1700000000.9, None])
    assert item == {
        "userId": {"N": "7"},
        "emailAddress": {"S": "a@x"},
        "prefs": {"M": {"theme": {"S": "dark"},
                        "n": {"L": [{"N": "1"}, {"N": "2.5"}, {"NULL": True}, {"BOOL": True}]}}},
        "expires": {"N": "1700000000"},
        "type": {"S": "user"}, "v": {"N": "2"}, "live": {"BOOL": True},
    }
    assert m.key_schema == (("userId", "N"),)
    assert m.key([7]) == {"userId": {"N": "7"}}
    assert m.key_candidates({"userId": {"N": "7"}}) == [(7,)]
    only = tmap(columns=["email"])
    assert only.item(cols, [1, "e", "s", "{}", 1.0, "n"]) == {"id": {"N": "1"}, "email": {"S": "e"}}


def test_invalid_json_and_bad_ttl_are_poison() -> None:
    m = tmap(json_columns=["prefs"], ttl_column="expires")
    cols = ["id", "email", "secret", "prefs", "expires", "name"]
    with pytest.raises(Poison, match="invalid JSON"):
        m.item(cols, [1, None, None, "{nope", None, None])
    with pytest.raises(Poison, match="not epoch seconds"):
        m.item(cols, [1, None, None, None, "tomorrow", None])


def test_key_templates_single_table_design() -> None:
    orders = tmap("CREATE TABLE orders (cust TEXT, no INTEGER, total REAL, PRIMARY KEY (cust, no))",
                  partition_key={"name": "PK", "template": "CUSTOMER#{cust}"},
                  sort_key={"name": "SK", "template": "ORDER#{no}"}, constants={"type": "order"})
    item = orders.item(["cust", "no", "total"], ["ann", 12, 9.5])
    assert item == {"PK": {"S": "CUSTOMER#ann"}, "SK": {"S": "ORDER#12"}, "cust": {"S": "ann"},
                    "no": {"N": "12"}, "total": {"N": "9.5"}, "type": {"S": "order"}}
    assert orders.key_schema == (("PK", "S"), ("SK", "S"))
    assert orders.key(["ann", 12]) == {"PK": {"S": "CUSTOMER#ann"}, "SK": {"S": "ORDER#12"}}
    # Which items of a shared target this mapping could have written: templates and constants must fit.
    assert orders.could_own(item)
    assert not orders.could_own({**item, "SK": {"S": "PROFILE"}})
    assert not orders.could_own({**item, "type": {"S": "user"}})
    assert orders.key_from_primary_key


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # Templates may name any column, but one that exists.
        ({"partition_key": {"name": "PK", "template": "U#{nope}"}}, "names column 'nope'"),
        ({"partition_key": {"name": "PK", "template": "USERS"}}, "name no column"),
        ({"columns": ["nope"]}, "columns: names column 'nope'"),
        ({"json_columns": ["id"]}, "key column cannot be a JSON column"),
        ({"constants": {"id": 1}}, "overwrite a key attribute"),
    ],
)
def test_invalid_options_name_the_table(options: dict[str, Any], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        tmap(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"partition_key": {"name": "PK"}}, "partition_key must be"),
        ({"sort_key": {"name": "SK", "template": "X"}}, "needs a partition_key"),
        ({"rename": {"a": 1}}, "rename must be"),
        ({"constants": {"a": [1]}}, "constants must map"),
        ({"columns": "id"}, "columns must be a list"),
        ({"bogus": 1}, "bogus is not a known key"),
    ],
)
def test_option_types_are_checked_in_config(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.parse({"source": {"database": "x"}, "tables": [{"source": "t", "target": "target-t", **options}]})


def test_single_table_design_against_dynamodb_local(env: Any) -> None:
    from dynasync import backfill, capture, status, syncpass, verify

    shared = env.table("users", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, prefs TEXT)")
    env.table("orders", "CREATE TABLE orders (cust INTEGER, no INTEGER, total REAL, PRIMARY KEY (cust, no))")
    env.tables["orders"] = shared
    env.options["users"] = {"partition_key": {"name": "PK", "template": "USER#{id}"},
                            "sort_key": {"name": "SK", "template": "PROFILE"},
                            "constants": {"type": "user"}, "json_columns": ["prefs"]}
    env.options["orders"] = {"partition_key": {"name": "PK", "template": "USER#{cust}"},
                             "sort_key": {"name": "SK", "template": "ORDER#{no}"},
                             "constants": {"type": "order"}}
    env.write_config()
    env.sql("INSERT INTO users VALUES (1, 'ann', '{\"a\": 1}'), (2, 'bob', NULL)",
            "INSERT INTO orders VALUES (1, 10, 5.5), (1, 11, 7.25), (2, 10, 1.0)")
    env.run(capture.init)
    env.run(backfill.backfill)
    env.sql("DELETE FROM orders WHERE cust = 1 AND no = 10", "UPDATE users SET name = 'Ann' WHERE id = 1",
            "UPDATE orders SET no = 12 WHERE cust = 2", "INSERT INTO users VALUES (3, 'cy', 'not json')")
    env.run(syncpass.sync)
    keys = sorted((i["PK"]["S"], i["SK"]["S"], i["type"]["S"]) for i in env.items("users"))
    assert keys == [("USER#1", "ORDER#11", "order"), ("USER#1", "PROFILE", "user"),
                    ("USER#2", "ORDER#12", "order"), ("USER#2", "PROFILE", "user")]
    ann = next(i for i in env.items("users") if i["PK"]["S"] == "USER#1" and i["SK"]["S"] == "PROFILE")
    assert ann["name"] == {"S": "Ann"} and ann["prefs"] == {"M": {"a": {"N": "1"}}}
    assert env.run(status.status).dead_letters == 1  # user 3's prefs are not JSON
    r = env.run(verify.verify, tables=["orders"])
    assert r.in_sync, r.tables[0].examples  # the users' items are not "extra" orders
    env.client.put_item(TableName=shared, Item={"PK": {"S": "USER#9"}, "SK": {"S": "ORDER#1"},
                                                "type": {"S": "order"}})
    r = env.run(verify.verify, tables=["orders"], repair=True)
    assert r.tables[0].extra == 1 and r.in_sync
    assert env.run(verify.verify, tables=["orders"]).in_sync
