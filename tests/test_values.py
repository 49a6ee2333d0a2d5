from __future__ import annotations

import sqlite3

import pytest

from dynasync import items, values
from dynasync.config import TableConfig
from dynasync.exceptions import Poison
from dynasync.schema import TableSchema, affinity, inspect, key_type
from dynasync.values import InvalidText

S1 = TableSchema("t", ("id",), ("N",), (), ())


def plain(schema: TableSchema) -> items.ItemMap:
    return items.build(TableConfig(schema.name, "target-t"), schema)


def test_values_map_by_stored_type() -> None:
    item = plain(S1).item(["id", "i", "r", "s", "b", "n", "e"], [1, -5, 0.1, "x", b"\x00\x01", None, ""])
    assert item == {
        "id": {"N": "1"},
        "i": {"N": "-5"},
        "r": {"N": "0.1"},
        "s": {"S": "x"},
        "b": {"B": b"\x00\x01"},
        "e": {"S": ""},
    }


@pytest.mark.parametrize("v", [2**63 - 1, -(2**63), 0])
def test_64_bit_integers_are_exact(v: int) -> None:
    assert values.value(v, "c") == {"N": str(v)}


@pytest.mark.parametrize(("v", "text"), [(0.1, "0.1"), (1 / 3, "0.3333333333333333"), (1e16, "1e+16"),
                                          (123.456, "123.456"), (-2.5e-7, "-2.5e-07")])
def test_reals_use_shortest_round_trip_text(v: float, text: str) -> None:
    assert values.value(v, "c") == {"N": text}
    assert float(text) == v


@pytest.mark.parametrize("v", [float("inf"), float("-inf"), float("nan"), 1e308, 5e-324, -1e200])
def test_numbers_outside_dynamodb_range_are_poison(v: float) -> None:
    with pytest.raises(Poison):
        values.value(v, "c")


def test_invalid_utf8_is_poison() -> None:
    assert isinstance(values.text_factory(b"\xff\xfe"), InvalidText)
    assert values.text_factory(b"caf\xc3\xa9") == "café"
    with pytest.raises(Poison, match="UTF-8"):
        values.value(InvalidText(b"\xff"), "c")


def test_text_with_nul_survives() -> None:
    assert values.value("a\x00b", "c") == {"S": "a\x00b"}


@pytest.mark.parametrize(
    ("declared", "aff", "kt"),
    [("INTEGER", "INTEGER", "N"), ("BIGINT", "INTEGER", "N"), ("VARCHAR(10)", "TEXT", "S"),
     ("BLOB", "BLOB", "B"), ("", "BLOB", "B"), ("REAL", "REAL", "N"), ("DOUBLE", "REAL", "N"),
     ("NUMERIC", "NUMERIC", "N"), ("DECIMAL(10,2)", "NUMERIC", "N"), ("DATETIME", "NUMERIC", "N")],
)
def test_affinity_and_key_types(declared: str, aff: str, kt: str) -> None:
    assert affinity(declared) == aff
    assert key_type(declared) == kt


def test_key_values_follow_key_type() -> None:
    s = TableSchema("t", ("a", "b"), ("S", "B"), (), ())
    assert plain(s).key([7, "x"]) == {"a": {"S": "7"}, "b": {"B": b"x"}}
    with pytest.raises(Poison, match="empty"):
        plain(s).key(["", b"x"])
    with pytest.raises(Poison, match="NULL"):
        plain(s).key([None, b"x"])
    with pytest.raises(Poison, match="at most 2048"):
        plain(s).key(["x" * 2049, b"x"])
    with pytest.raises(Poison, match="at most 1024"):
        plain(s).key(["x", b"x" * 1025])
    with pytest.raises(Poison, match="is a number"):
        plain(S1).key(["abc"])


def test_item_over_400kb_is_poison() -> None:
    plain(S1).item(["id", "blob"], [1, b"x" * (400 * 1024 - 100)])
    with pytest.raises(Poison, match="400 KB"):
        plain(S1).item(["id", "blob"], [1, b"x" * (400 * 1024)])


def test_same_item_normalises_numbers() -> None:
    assert values.same_item({"a": {"N": "1.50"}}, {"a": {"N": "1.5"}})
    assert not values.same_item({"a": {"N": "1"}}, {"a": {"S": "1"}})
    assert not values.same_item({"a": {"N": "1"}}, {"a": {"N": "1"}, "b": {"S": ""}})


def test_inspect_refuses_unsyncable_tables() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE nopk (a, b)")
    conn.execute("CREATE TABLE wide (a, b, c, PRIMARY KEY (a, b, c))")
    conn.execute("CREATE VIEW v AS SELECT 1")
    conn.execute("CREATE VIRTUAL TABLE fts USING fts5(body)")
    for name, message in [("nopk", "no declared PRIMARY KEY"), ("wide", "3-column"), ("v", "view"),
                          ("fts", "virtual table"), ("missing", "does not exist")]:
        with pytest.raises(Exception, match=message):
            inspect(conn, name)


def test_inspect_composite_key_order_and_unique_indexes() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE o (b TEXT, a INTEGER, email TEXT UNIQUE, x, PRIMARY KEY (a, b))")
    conn.execute("CREATE UNIQUE INDEX o_x ON o (x, email)")
    conn.execute("CREATE UNIQUE INDEX o_expr ON o (lower(email))")
    conn.execute("CREATE UNIQUE INDEX o_sup ON o (a, b, x)")
    s = inspect(conn, "o")
    assert s.key == ("a", "b") and s.key_types == ("N", "S")
    # Every constraint a REPLACE can delete another row through, the expression
    # index and the rowid included; the one containing the key cannot.
    terms = sorted(tuple(t.sql for t in c.terms) for c in s.conflicts)
    assert terms == [('"email"',), ('"x"', '"email"'), ("lower(email)",), ("rowid",)]
    kinds = {c.name: [t.kind for t in c.terms] for c in s.conflicts}
    assert kinds["o_expr"] == ["expression"] and kinds["rowid"] == ["rowid"]
