"""SQLite values to DynamoDB attribute values (the low-level wire format).

Values map by their stored type: INTEGER and REAL to N, TEXT to S, BLOB to B,
NULL to an omitted attribute. Key attributes map by the key column's declared
affinity instead, so every item of a table has the same key types. Anything
DynamoDB can never accept raises Poison with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from dynasync.schema import TableSchema

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]

MAX_ITEM_BYTES = 400 * 1024
MAX_PARTITION_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024
# Every double above the largest DynamoDB number is >= 1e126, and repr() of a
# double at or above 1e-130 never falls below DynamoDB's smallest number.
_MAX_FLOAT = float(Decimal("9.9999999999999999999999999999999999999E+125"))
_MIN_FLOAT = 1e-130


class Poison(Exception):
    """A row DynamoDB can never accept; the message is the dead-letter reason."""


class InvalidText(bytes):
    """TEXT that is not valid UTF-8, kept as raw bytes so it can be reported."""


def text_factory(raw: bytes) -> str | InvalidText:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidText(raw)


def number(value: int | float, column: str) -> str:
    if isinstance(value, int):
        return str(value)  # exact over the full 64-bit range
    # repr() is the shortest text that round-trips to the same double.
    text = repr(value)
    if not math.isfinite(value):
        raise Poison(f"column {column!r}: {text} cannot be stored in DynamoDB (not a finite number)")
    magnitude = abs(value)
    if magnitude > _MAX_FLOAT or (magnitude and magnitude < _MIN_FLOAT):
        raise Poison(f"column {column!r}: {text} is outside DynamoDB's number range (1E-130 to 1E+126)")
    return text


def value(v: Any, column: str) -> AttributeValue | None:
    if v is None:
        return None
    if isinstance(v, InvalidText):
        raise Poison(f"column {column!r} holds text that is not valid UTF-8")
    if isinstance(v, str):
        return {"S": v}
    if isinstance(v, bytes):
        return {"B": v}
    if isinstance(v, int | float):
        return {"N": number(v, column)}
    raise Poison(f"column {column!r}: unsupported value type {type(v).__name__}")


def key_value(v: Any, column: str, key_type: str, limit: int) -> AttributeValue:
    if v is None:
        raise Poison(f"key column {column!r} is NULL")
    if isinstance(v, InvalidText):
        raise Poison(f"key column {column!r} holds text that is not valid UTF-8")
    if key_type == "N":
        if isinstance(v, int | float):
            return {"N": number(v, column)}
        raise Poison(
            f"key column {column!r} holds {type(v).__name__} {v!r}, but the key attribute is a number"
        )
    if key_type == "S":
        if isinstance(v, bytes):
            raise Poison(f"key column {column!r} holds a BLOB, but the key attribute is a string")
        text = number(v, column) if isinstance(v, int | float) else v
        size = len(text.encode("utf-8"))
        kind = "S"
        payload: Any = text
    else:
        if isinstance(v, int | float):
            raise Poison(f"key column {column!r} holds a number, but the key attribute is binary")
        payload = v.encode("utf-8") if isinstance(v, str) else bytes(v)
        size = len(payload)
        kind = "B"
    if size == 0:
        raise Poison(f"key column {column!r} is empty; DynamoDB keys cannot be empty")
    if size > limit:
        raise Poison(f"key column {column!r} is {size} bytes; DynamoDB allows at most {limit}")
    return {kind: payload}


def key(schema: TableSchema, values: Sequence[Any]) -> Item:
    """The DynamoDB key for key column values (as logged in the changelog)."""
    limits = (MAX_PARTITION_KEY_BYTES, MAX_SORT_KEY_BYTES)
    return {
        col: key_value(values[i], col, schema.key_types[i], limits[i]) for i, col in enumerate(schema.key)
    }


def item(schema: TableSchema, columns: Sequence[str], row: Sequence[Any]) -> Item:
    """The whole item for a row; columns are the row's column names.

    This runs once per row on the hot path, so common types are mapped inline
    and the exact size is only computed when a cheap bound says it might matter.
    """
    result: Item = {}
    keycols = schema.key
    bound = 0  # >= the item size / 4, since a character is at most 4 UTF-8 bytes
    for col, v in zip(columns, row, strict=True):
        if v is None or col in keycols:
            continue
        t = type(v)
        if t is str:
            result[col] = {"S": v}
            bound += len(v)
        elif t is int:
            result[col] = {"N": str(v)}
            bound += 11
        elif t is bytes:
            result[col] = {"B": v}
            bound += len(v)
        else:
            av = value(v, col)
            if av is None:  # pragma: no cover - None is skipped above
                continue
            result[col] = av
            bound += 11
        bound += len(col)
    result.update(key(schema, [row[columns.index(c)] for c in keycols]))
    if bound * 4 + 4096 > MAX_ITEM_BYTES:
        size = item_size(result)
        if size > MAX_ITEM_BYTES:
            raise Poison(f"item is {size} bytes; DynamoDB allows at most {MAX_ITEM_BYTES} (400 KB)")
    return result


def item_size(it: Item) -> int:
    """DynamoDB's item size: attribute names plus values, in bytes."""
    total = 0
    for name, av in it.items():
        total += len(name.encode("utf-8"))
        ((kind, v),) = av.items()
        if kind == "S":
            total += len(v.encode("utf-8"))
        elif kind == "B":
            total += len(v)
        else:
            digits = len(v.lstrip("-").replace(".", "").split("e")[0].split("E")[0].strip("0")) or 1
            total += (digits + 1) // 2 + 1
    return total


def normalize(av: AttributeValue) -> tuple[str, Any]:
    """A comparable form, so '1.50' and '1.5' are the same number."""
    ((kind, v),) = av.items()
    if kind == "N":
        return kind, Decimal(v).normalize()
    if kind == "B":
        return kind, bytes(v)
    return kind, v


def key_identity(key: Item) -> tuple[Any, ...]:
    """A hashable form of a key under which equal DynamoDB keys collide."""
    return tuple(sorted((name, normalize(av)) for name, av in key.items()))


def same_item(a: Item, b: Item) -> bool:
    if a.keys() != b.keys():
        return False
    return all(normalize(a[k]) == normalize(b[k]) for k in a)
