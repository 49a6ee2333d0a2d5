"""Items bigger than DynamoDB allows (400 KB): a table's `oversize` policy, and
the stored forms other programs read back with decode_item().

* "dead-letter" (the default): the row becomes a dead letter, as before.
* "compress": the largest attributes are compressed, one by one, until the item
  fits. Each becomes a Binary attribute holding zlib(the attribute's value in
  DynamoDB JSON, UTF-8), and the marker attribute lists them.
* "s3": the largest attributes move, one by one, to one S3 object until the
  item fits. The object holds them as a DynamoDB JSON map (UTF-8), and the
  marker points to it (bucket, key, size, SHA-256).

Keys, computed attributes, constants and the TTL attribute always stay in the
item: indexes, TTL and dynasync's own bookkeeping need them. The marker is

    "_dynasync": {"M": {"v": {"N": "1"},
                        "zlib": {"SS": [names...]},            # compress
                        "s3": {"M": {"bucket": {"S": ...}, "key": {"S": ...},
                                     "size": {"N": ...}, "sha256": {"S": hex},
                                     "attributes": {"SS": [names...]}}}}}  # s3

An item that fits carries no marker and is stored exactly as before. The S3
key is `{prefix}{target}/{sha256 of the item's key}/{sha256 of the body}.json`:
the same content for the same item lands on the same key, so a retry rewrites
it, and no two items share an object.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dynasync.exceptions import Poison
from dynasync.tableconfig import MARKER, OVERSIZE_POLICIES
from dynasync.values import MAX_ITEM_BYTES, AttributeValue, Item, item_size, key_text, same_item

VERSION = 1
ZLIB_LEVEL = 6
# Room for the marker of an s3 item: its fields with the longest values they can take.
_SIZE_DIGITS = "9" * 12


@dataclass(frozen=True)
class Location:
    """Where a table's offloaded attributes go: [s3] bucket and prefix."""

    bucket: str
    prefix: str


@dataclass
class Upload:
    """An S3 object an item points to: written before the item is sent."""

    bucket: str
    key: str
    body: bytes
    sha256: str
    # When it was last written (time.monotonic()): a retried batch writes it
    # again only once that is long enough ago for verify's sweep to take it for an orphan.
    written: float | None = None


@dataclass(frozen=True)
class Pointer:
    """What an s3 item's marker says of its object."""

    bucket: str
    key: str
    size: int
    sha256: str
    attributes: tuple[str, ...]


@dataclass(frozen=True)
class Fitted:
    """An oversized item in the form its table's policy stores, and the object it needs."""

    item: Item
    upload: Upload | None = None


class Policy:
    """One table's `oversize` policy, with the attributes it may move."""

    def __init__(
        self, mode: str, fixed: frozenset[str], key_names: tuple[str, ...], target: str,
        location: Location | None = None,
    ) -> None:
        if mode not in OVERSIZE_POLICIES:
            raise ValueError(f"unknown oversize policy {mode!r}")
        if mode == "s3" and location is None:
            raise ValueError("the s3 oversize policy needs [s3] bucket")
        self.mode = mode
        self.fixed = fixed | {MARKER}  # never moved: keys, computed attributes, constants, TTL
        self.key_names = key_names
        self.target = target
        self.location = location

    def fit(self, item: Item, size: int) -> Fitted:
        """The item as this policy stores it; Poison (a dead letter) when it cannot fit."""
        too_big = f"item is {size} bytes; DynamoDB allows at most {MAX_ITEM_BYTES} (400 KB)"
        if self.mode == "compress":
            return _compressed(item, self._movable(item), too_big)
        if self.mode == "s3":
            return self._offloaded(item, too_big)
        raise Poison(too_big)

    def _movable(self, item: Item) -> list[str]:
        """The attributes that may move, largest first (then by name, so the choice is stable)."""
        sizes = {name: item_size({name: av}) for name, av in item.items() if name not in self.fixed}
        return sorted(sizes, key=lambda n: (-sizes[n], n))

    def _offloaded(self, item: Item, too_big: str) -> Fitted:
        assert self.location is not None
        rest, moved = dict(item), {}
        folder = hashlib.sha256(key_text({n: item[n] for n in self.key_names}).encode()).hexdigest()
        key_length = len(f"{self.location.prefix}{self.target}/{folder}/") + 64 + len(".json")
        for name in self._movable(item):
            moved[name] = rest.pop(name)
            room = _pointer(Pointer(self.location.bucket, "k" * key_length, int(_SIZE_DIGITS), "0" * 64,
                                    tuple(moved)))
            if item_size({**rest, MARKER: room}) <= MAX_ITEM_BYTES:
                break
        else:
            raise Poison(f"{too_big}; without the attributes S3 could hold, its keys, computed "
                         f"attributes and constants alone are {item_size(rest)} bytes")
        body = _json_map(moved).encode("utf-8")
        sha = hashlib.sha256(body).hexdigest()
        key = f"{self.location.prefix}{self.target}/{folder}/{sha}.json"
        pointer = Pointer(self.location.bucket, key, len(body), sha, tuple(sorted(moved)))
        rest[MARKER] = _pointer(pointer)
        return Fitted(rest, Upload(self.location.bucket, key, body, sha))


def _compressed(item: Item, movable: list[str], too_big: str) -> Fitted:
    """Compress the largest attributes until the item fits."""
    out, names = dict(item), []
    size = item_size(out)
    for name in movable:
        out[name] = {"B": zlib.compress(_json(item[name]).encode("utf-8"), ZLIB_LEVEL)}
        names.append(name)
        out[MARKER] = {"M": {"v": {"N": str(VERSION)}, "zlib": {"SS": sorted(names)}}}
        size = item_size(out)
        if size <= MAX_ITEM_BYTES:
            return Fitted(out)
    raise Poison(f"{too_big}; compressed it is still {size} bytes")


def _inflate(av: AttributeValue) -> AttributeValue:
    """A compressed attribute's original value."""
    return from_json(zlib.decompress(_bytes(av["B"])).decode("utf-8"))


def _pointer(p: Pointer) -> AttributeValue:
    """The marker of an item whose attributes are in S3."""
    fields = {
        "bucket": {"S": p.bucket},
        "key": {"S": p.key},
        "size": {"N": str(p.size)},
        "sha256": {"S": p.sha256},
        "attributes": {"SS": list(p.attributes)},
    }
    return {"M": {"v": {"N": str(VERSION)}, "s3": {"M": fields}}}


# --- reading the stored forms back ------------------------------------------------


def pointer(item: Item) -> Pointer | None:
    """The S3 object an item points to, or None."""
    marker = item.get(MARKER)
    if marker is None:
        return None
    s3 = marker.get("M", {}).get("s3")
    if s3 is None:
        return None
    f = s3["M"]
    return Pointer(f["bucket"]["S"], f["key"]["S"], int(f["size"]["N"]), f["sha256"]["S"],
                   tuple(f["attributes"]["SS"]))


def _marker(item: Item) -> dict[str, Any] | None:
    marker = item.get(MARKER)
    if marker is None:
        return None
    fields: dict[str, Any] = marker["M"]
    version = int(fields["v"]["N"])
    if version != VERSION:
        raise ValueError(f"item stored in dynasync format {version}; this dynasync reads format {VERSION}")
    return fields


def decompressed(item: Item) -> Item:
    """The item with its compressed attributes restored; an s3 marker is kept."""
    fields = _marker(item)
    if fields is None or "zlib" not in fields:
        return item
    out = dict(item)
    for name in fields["zlib"]["SS"]:
        out[name] = _inflate(item[name])
    rest = {k: v for k, v in fields.items() if k != "zlib"}
    if rest.keys() == {"v"}:
        del out[MARKER]
    else:
        out[MARKER] = {"M": rest}
    return out


def decode(item: Item, fetch: Callable[[str, str], bytes]) -> Item:
    """The item as its row maps it: compressed attributes restored, offloaded ones
    read through `fetch(bucket, key)` and checked against the pointer."""
    out = decompressed(item)
    p = pointer(out)
    if p is None:
        return out
    body = fetch(p.bucket, p.key)
    if len(body) != p.size or hashlib.sha256(body).hexdigest() != p.sha256:
        raise ValueError(f"s3://{p.bucket}/{p.key} does not hold what the item points to (size or SHA-256)")
    moved = from_json_map(body.decode("utf-8"))
    out = {k: v for k, v in out.items() if k != MARKER}
    out.update(moved)
    return out


def same_stored(expected: Item, actual: Item) -> bool:
    """Whether DynamoDB holds the item as the policy stores it: compressed
    attributes are compared by their content, whatever zlib produced them, and
    offloaded ones by the pointer (its SHA-256 names the content)."""
    if same_item(expected, actual):
        return True
    if MARKER not in expected or MARKER not in actual:
        return False
    try:
        return same_item(_comparable(expected), _comparable(actual))
    except (ValueError, KeyError, TypeError, zlib.error):
        return False  # a marker that does not decode: rewrite the item


def _comparable(item: Item) -> Item:
    """An item with its compressed attributes restored, its marker kept as it is
    (so which attributes were compressed, or moved, still counts)."""
    fields = _marker(item)
    if fields is None or "zlib" not in fields:
        return item
    out = dict(item)
    for name in fields["zlib"]["SS"]:
        out[name] = _inflate(item[name])
    return out


# --- DynamoDB JSON --------------------------------------------------------------


def _plain(av: Any) -> Any:
    """An attribute value as JSON can hold it: binary as base64 (DynamoDB JSON)."""
    ((kind, v),) = av.items()
    if kind == "B":
        return {"B": base64.b64encode(_bytes(v)).decode("ascii")}
    if kind == "BS":
        return {"BS": [base64.b64encode(_bytes(x)).decode("ascii") for x in v]}
    if kind == "L":
        return {"L": [_plain(x) for x in v]}
    if kind == "M":
        return {"M": {k: _plain(x) for k, x in v.items()}}
    return {kind: v}


def _json(av: AttributeValue) -> str:
    """An attribute value as compact DynamoDB JSON."""
    return _dumps(_plain(av))


def _json_map(item: Item) -> str:
    """A map of attribute values, sorted by name, as compact DynamoDB JSON: the
    same attributes always give the same bytes (the S3 key is their hash)."""
    return _dumps({k: _plain(v) for k, v in item.items()})


def _dumps(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _typed(doc: Any) -> AttributeValue:
    ((kind, v),) = doc.items()
    if kind == "B":
        return {"B": base64.b64decode(v)}
    if kind == "BS":
        return {"BS": [base64.b64decode(x) for x in v]}
    if kind == "L":
        return {"L": [_typed(x) for x in v]}
    if kind == "M":
        return {"M": {k: _typed(x) for k, x in v.items()}}
    return {kind: v}


def from_json(text: str) -> AttributeValue:
    """One attribute value from DynamoDB JSON."""
    return _typed(json.loads(text))


def from_json_map(text: str) -> Item:
    """A map of attribute values from DynamoDB JSON."""
    return {k: _typed(v) for k, v in json.loads(text).items()}


def _bytes(v: Any) -> bytes:
    """A Binary value as boto3 gives it (bytes) or as DynamoDB JSON writes it (base64 text)."""
    if isinstance(v, str):
        return base64.b64decode(v)
    return bytes(v)
