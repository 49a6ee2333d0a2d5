"""What becomes of one source row: a Write that brings its DynamoDB item in
line with it, or Rejected, a dead letter with its reason. Both name the row
by its RowRef.

dynasync's own tables store a key in two columns, k1 and k2, so a one-column
key is padded with NULL; RowRef owns that padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from dynasync.target import WriteRequest
from dynasync.values import Item


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
    """One BatchWriteItem request for one row, and the DynamoDB key it writes.

    A plain slotted class, built once per changed row on the hot path: a Put's
    key is only taken from its item when something asks for it.
    """

    __slots__ = ("_key_names", "ref", "request")

    def __init__(self, ref: RowRef, request: WriteRequest, key_names: tuple[str, ...] = ()) -> None:
        self.ref = ref
        self.request = request
        self._key_names = key_names  # a Put's key attributes; a Delete carries its key

    @property
    def is_put(self) -> bool:
        """A Put (the row exists) rather than a Delete."""
        return "PutRequest" in self.request

    @property
    def key(self) -> Item:
        """The DynamoDB key this write puts or deletes."""
        put = self.request.get("PutRequest")
        if put is None:
            key: Item = self.request["DeleteRequest"]["Key"]
            return key
        item: Item = put["Item"]
        return {name: item[name] for name in self._key_names}

    def __repr__(self) -> str:
        return f"Write({self.ref!r}, {self.request!r})"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row DynamoDB can never accept: it becomes a dead letter with this reason."""

    ref: RowRef
    reason: str
    write: Write | None = None  # the write DynamoDB refused, when it was one


@dataclass
class Change:
    """One row of a batch: what it should write now, and the items it may have written."""

    ref: RowRef
    write: Write | Rejected | None  # None: the row is gone (or filtered out) with no known item
    old: tuple[str, ...] = ()  # key_text of every item recorded for this row
