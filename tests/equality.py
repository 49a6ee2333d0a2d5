"""An independent check that a DynamoDB table equals its SQLite table: it maps
rows with its own few lines rather than trusting dynasync's verify."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from decimal import Decimal
from typing import Any

# An item as DynamoDB holds it -> the item as its row maps it (e.g. dynasync.decode_item).
Decode = Callable[[dict[str, Any]], dict[str, Any]]


def _norm(av: dict[str, Any]) -> tuple[str, Any]:
    ((kind, v),) = av.items()
    if kind == "N":
        return "N", Decimal(v).normalize()
    return kind, bytes(v) if kind == "B" else v


def _expected_value(v: Any) -> tuple[str, Any] | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        return "B", v
    if isinstance(v, str):
        return "S", v
    return "N", Decimal(repr(v) if isinstance(v, float) else str(v)).normalize()


def sqlite_side(db: str, table: str, key_types: dict[str, str]) -> dict[tuple[Any, ...], dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
    try:
        cur = conn.execute(f'SELECT * FROM "{table.replace(chr(34), chr(34) * 2)}"')
        cols = [d[0] for d in cur.description]
        out = {}
        for row in cur:
            item: dict[str, Any] = {}
            for c, v in zip(cols, row, strict=True):
                ev = _expected_value(v)
                if c in key_types and ev is not None and key_types[c] == "S" and ev[0] == "N":
                    ev = ("S", str(v))
                if c in key_types and ev is not None and key_types[c] == "B" and ev[0] == "S":
                    ev = ("B", v.encode("utf-8"))  # TEXT in a column with no declared type
                if ev is not None:
                    item[c] = ev
            out[tuple(item[k] for k in key_types)] = item
        return out
    finally:
        conn.close()


def dynamo_side(client: Any, target: str, key_names: list[str],
                decode: Decode | None = None) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Every item of the target by its key; with `decode`, as decode reads it back
    (an item stored compressed or in S3 as its row maps it)."""
    out = {}
    kwargs: dict[str, Any] = {"TableName": target, "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        for it in page["Items"]:
            item = {k: _norm(v) for k, v in (decode(it) if decode else it).items()}
            out[tuple(item[k] for k in key_names)] = item
        if "LastEvaluatedKey" not in page:
            return out
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def assert_in_sync(env: Any, table: str, key_types: dict[str, str] | None = None,
                   ignore: set[tuple[Any, ...]] = frozenset(),  # type: ignore[assignment]
                   decode: Decode | None = None) -> None:
    key_types = key_types or {"id": "N"}
    want = sqlite_side(str(env.db_path), table, key_types)
    have = dynamo_side(env.client, env.tables[table], list(key_types), decode)
    for k in ignore:
        want.pop(k, None)
    missing = sorted(set(want) - set(have), key=repr)[:5]
    extra = sorted(set(have) - set(want), key=repr)[:5]
    diff = [k for k in want if k in have and want[k] != have[k]][:5]
    assert not (missing or extra or diff), f"missing {missing}, extra {extra}, different {diff}"


def _text(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def assert_templated_in_sync(env: Any, table: str, pk: str, sk: str, where: str) -> None:
    """DynamoDB holds exactly one item per row matching `where`, keyed
    PK = pk.format(row) and SK = sk.format(row), with every column as an attribute."""
    conn = sqlite3.connect(env.db_path)
    try:
        cur = conn.execute(f'SELECT * FROM "{table}" WHERE {where}')
        cols = [d[0] for d in cur.description]
        want: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in cur:
            values = dict(zip(cols, row, strict=True))
            text = {c: _text(v) for c, v in values.items()}
            item = {c: ev for c, v in values.items() if (ev := _expected_value(v)) is not None}
            item["PK"] = ("S", pk.format(**text))
            item["SK"] = ("S", sk.format(**text))
            want[(item["PK"], item["SK"])] = item
    finally:
        conn.close()
    have = dynamo_side(env.client, env.tables[table], ["PK", "SK"])
    missing = sorted(set(want) - set(have), key=repr)[:5]
    extra = sorted(set(have) - set(want), key=repr)[:5]
    diff = [k for k in want if k in have and want[k] != have[k]][:5]
    assert not (missing or extra or diff), f"missing {missing}, extra {extra}, different {diff}"
