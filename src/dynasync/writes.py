"""What becomes of one source row: a Write that brings its DynamoDB item in
line with it, or Rejected, a dead letter with its reason. Both name the row
by its RowRef.

dynasync's own tables store a key in two columns, k1 and k2, so a one-column
key is padded with NULL; RowRef owns that padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from dynasync.oversize import Upload
from dynasync.target import WriteRequest, delete, put
from dynasync.values import Item, key_text


class RowRef(NamedTuple):
    """A source row's identity: its table and key values (k2 is None for a one-column key)."""

    table: str
    k1: Any
    k2: Any = None

    @classmethod
    def of(cls, table: str, key: Sequence[Any]) -> RowRef:
        """The reference for one or two key values, in primary-key order."""
        return cls(table, key[0], key[1] if len(key) > 1 else None)

    @property
    def key(self) -> tuple[Any, Any]:
        """The key as dynasync's tables store it: (k1, k2)."""
        return (self.k1, self.k2)

    def values(self, width: int) -> tuple[Any, ...]:
        """The key values without the padding, for a key of `width` columns."""
        return (self.k1, self.k2)[:width]


class Write:
    """One write that brings one row's DynamoDB item in line: the Put of the whole
    item, or the Delete of a key. Its key has one identity, `key_text` (as
    dynasync's own tables store it); `request` is the wire form the target speaks.

    A plain slotted class, built once per changed row on the hot path: a Put's
    key, and its text, are only worked out when something asks for them.
    """

    __slots__ = ("_key", "_key_names", "_text", "item", "ref", "upload")

    def __init__(
        self, ref: RowRef, item: Item | None, key: Item | None = None, key_names: tuple[str, ...] = (),
        upload: Upload | None = None,
    ) -> None:
        self.ref = ref
        self.item = item  # the whole item of a Put; None for a Delete
        self._key = key
        self._key_names = key_names  # a Put's key attributes
        self._text: str | None = None
        self.upload = upload  # the S3 object the item points to, written before it (dynasync.oversize)

    @classmethod
    def put(cls, ref: RowRef, item: Item, key_names: tuple[str, ...], upload: Upload | None = None) -> Write:
        """The Put of a row's whole item, whose key is made of these attributes
        (and, for an item whose attributes are in S3, the object it points to)."""
        return cls(ref, item, None, key_names, upload)

    @classmethod
    def delete(cls, ref: RowRef, key: Item) -> Write:
        """The Delete of an item by its key."""
        return cls(ref, None, key)

    @property
    def is_put(self) -> bool:
        """A Put (the row exists) rather than a Delete."""
        return self.item is not None

    @property
    def key(self) -> Item:
        """The DynamoDB key this write puts or deletes."""
        if self._key is None:
            item = self.item or {}
            self._key = {name: item[name] for name in self._key_names}
        return self._key

    @property
    def key_text(self) -> str:
        """The key's identity: equal for keys DynamoDB treats as one (values.key_text)."""
        if self._text is None:
            self._text = key_text(self.key)
        return self._text

    @property
    def request(self) -> WriteRequest:
        """The write as BatchWriteItem takes it."""
        return put(self.item) if self.item is not None else delete(self.key)

    def __repr__(self) -> str:
        return f"Write({self.ref!r}, {self.request!r})"


class DeadLetterKind(StrEnum):
    """Why a row is a dead letter. Kept in a column of its own, so nothing reads
    it back out of the reason's text (which is for people, and may be reworded)."""

    UNSTORABLE = "unstorable"  # a value DynamoDB can never hold, found by dynasync
    REFUSED = "refused"  # DynamoDB refused the item (ValidationException, ...)
    COLLISION = "collision"  # another row holds the item this row's key renders
    FILTER = "filter"  # the row filter fails on the row's values
    NULL_KEY = "null_key"  # a key column is NULL


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row DynamoDB can never accept: it becomes a dead letter with this reason."""

    ref: RowRef
    reason: str
    write: Write | None = None  # the write DynamoDB refused, when it was one
    kind: DeadLetterKind = DeadLetterKind.UNSTORABLE
    item: str | None = None  # a collision: the item (key_text) another row holds


@dataclass
class Change:
    """One row of a batch: what it should write now, and the items it may have written."""

    ref: RowRef
    write: Write | Rejected | None  # None: the row is gone (or filtered out) with no known item
    old: tuple[str, ...] = ()  # key_text of every item recorded for this row
