"""One SQLite value to one DynamoDB attribute value (the low-level wire format).

Values map by their stored type: INTEGER and REAL to N, TEXT to S, BLOB to B,
NULL to an omitted attribute. Key attributes map by the key column's declared
affinity instead, so every item of a table has the same key types. Anything
DynamoDB can never accept raises Poison with the reason. Whole rows become
items in dynasync.items, which applies a table's mapping options.
"""

from __future__ import annotations

import base64
import json
import math
from decimal import Context, Decimal
from typing import Any

from dynasync.exceptions import Poison

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]

MAX_ITEM_BYTES = 400 * 1024
MAX_DEPTH = 32  # nesting levels of an item; the item is the first, so a value nests 31 maps or lists
MAX_DIGITS = 38  # significant digits of a DynamoDB number
MAX_PARTITION_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024
# Every double above the largest DynamoDB number is >= 1e126, and repr() of a
# double at or above 1e-130 never falls below DynamoDB's smallest number.
_MAX_FLOAT = float(Decimal("9.9999999999999999999999999999999999999E+125"))
_MIN_FLOAT = 1e-130
# Enough precision that normalizing a DynamoDB number (38 digits) never rounds it.
_EXACT = Context(prec=80)


class InvalidText(bytes):
    """TEXT that is not valid UTF-8, kept as raw bytes so it can be reported."""


def text_factory(raw: bytes) -> str | InvalidText:
    """sqlite3's text_factory: TEXT that is not UTF-8 is kept, to become a dead letter."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidText(raw)


def number(value: int | float, column: str) -> str:
    """A number's DynamoDB text, or Poison when DynamoDB cannot hold it."""
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
    """A non-key value by its stored type; None for NULL (the attribute is left out)."""
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
    """A key value as the key attribute's type, within DynamoDB's key size limit."""
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


def item_size(it: Item) -> int:
    """DynamoDB's item size: attribute names plus values, in bytes."""
    return sum(len(name.encode("utf-8")) + _value_size(av) for name, av in it.items())


def _value_size(av: AttributeValue) -> int:
    ((kind, v),) = av.items()
    if kind == "S":
        return len(v.encode("utf-8"))
    if kind == "B":
        return len(v)
    if kind == "N":
        digits = len(v.lstrip("-").replace(".", "").split("e")[0].split("E")[0].strip("0")) or 1
        return (digits + 1) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + _value_size(x) for x in v)
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: x}) for x in v)
    return 3 + sum(len(k.encode("utf-8")) + 1 + _value_size(x) for k, x in v.items())


def json_value(v: Any, column: str) -> AttributeValue:
    """A JSON document (TEXT) as a DynamoDB map, list or scalar, numbers kept exact."""
    if not isinstance(v, str) or isinstance(v, InvalidText):
        raise Poison(f"column {column!r} is a JSON column but holds {type(v).__name__}, not text")
    try:
        doc = json.loads(v, parse_float=Decimal, parse_int=Decimal, parse_constant=_no_constant)
    except ValueError as e:
        raise Poison(f"column {column!r} holds invalid JSON: {e}") from None
    except RecursionError:
        raise Poison(f"column {column!r} holds JSON nested too deeply for DynamoDB") from None
    return _from_json(doc, column, 1)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number DynamoDB can hold")


def _from_json(doc: Any, column: str, depth: int) -> AttributeValue:
    if doc is None:
        return {"NULL": True}
    if isinstance(doc, bool):
        return {"BOOL": doc}
    if isinstance(doc, Decimal):
        return {"N": decimal_number(doc, column)}
    if isinstance(doc, str):
        return {"S": _unicode(doc, column)}
    if depth >= MAX_DEPTH:
        raise Poison(f"column {column!r} holds JSON nested deeper than DynamoDB's {MAX_DEPTH} levels")
    if isinstance(doc, list):
        return {"L": [_from_json(x, column, depth + 1) for x in doc]}
    return {"M": {_unicode(k, column): _from_json(x, column, depth + 1) for k, x in doc.items()}}


def _unicode(text: str, column: str) -> str:
    """JSON text must be valid Unicode: a lone surrogate escape ("\\ud800") is not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Poison(f"column {column!r} holds JSON text with a lone surrogate, not valid Unicode") from None
    return text


def decimal_number(d: Decimal, column: str) -> str:
    """An exact decimal's DynamoDB text, or Poison when DynamoDB cannot hold it
    (38 significant digits, magnitudes from 1E-130 to below 1E+126)."""
    if not d.is_finite():
        raise Poison(f"column {column!r}: {d} cannot be stored in DynamoDB (not a finite number)")
    if d.is_zero():
        return "0"
    significant = len("".join(map(str, d.as_tuple().digits)).strip("0"))
    if significant > MAX_DIGITS:
        raise Poison(f"column {column!r}: {d} has more than {MAX_DIGITS} significant digits")
    if not -130 <= d.adjusted() <= 125:
        raise Poison(f"column {column!r}: {d} is outside DynamoDB's number range (1E-130 to 1E+126)")
    return str(d)


def constant(v: str | int | float | bool) -> AttributeValue:
    """A `constants` entry from the config as an attribute value."""
    if isinstance(v, bool):
        return {"BOOL": v}
    if isinstance(v, str):
        return {"S": v}
    return {"N": number(v, "constants")}


def ttl_value(v: Any, column: str) -> AttributeValue:
    """TTL attributes must be a number of whole epoch seconds."""
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return {"N": str(int(v))}
    raise Poison(f"TTL column {column!r} holds {v!r}, not epoch seconds")


def normalize(av: AttributeValue) -> tuple[str, Any]:
    """A comparable form, so '1.50' and '1.5' are the same number (exactly: no rounding)."""
    ((kind, v),) = av.items()
    if kind == "N":
        return kind, Decimal(v).normalize(_EXACT)
    if kind == "B":
        return kind, bytes(v)
    if kind == "L":
        return kind, tuple(normalize(x) for x in v)
    if kind == "M":
        return kind, tuple(sorted((k, normalize(x)) for k, x in v.items()))
    return kind, v


# One encoder for key_text: json.dumps with options builds a new one per call.
_KEY_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def key_text(key: Item) -> str:
    """A key as text, equal for keys DynamoDB treats as one (numbers normalized,
    binary as base64): how dynasync's own tables store an item's key."""
    out: dict[str, dict[str, str]] = {}
    for name, av in key.items():
        ((kind, v),) = av.items()
        if kind == "N":
            v = format(Decimal(v).normalize(_EXACT), "f") if Decimal(v) else "0"
        elif kind == "B":
            v = base64.b64encode(bytes(v)).decode("ascii")
        out[name] = {kind: v}
    return _KEY_JSON.encode(out)


def key_from_text(text: str) -> Item:
    """The key that key_text() wrote."""
    out: Item = {}
    for name, av in json.loads(text).items():
        ((kind, v),) = av.items()
        out[name] = {kind: base64.b64decode(v) if kind == "B" else v}
    return out


def same_item(a: Item, b: Item) -> bool:
    """Whether two items hold the same attributes and values, as DynamoDB compares them."""
    if a.keys() != b.keys():
        return False
    return all(normalize(a[k]) == normalize(b[k]) for k in a)
