"""The small interface between dynasync and DynamoDB.

dynasync.dynamodb implements it with boto3; the unit tests use an in-memory
fake (tests/fakes.py). Items and keys travel in DynamoDB's low-level
attribute-value format. Implementations raise the errors of
dynasync.exceptions: RetryableError (marked as throttling or not),
ValidationError, TableMissingError, or TargetError for anything fatal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dynasync.values import Item

WriteRequest = dict[str, Any]  # {"PutRequest": {"Item": ...}} or {"DeleteRequest": {"Key": ...}}
KeySchema = tuple[tuple[str, str], ...]  # ((name, "S"|"N"|"B"), ...) partition key first

MAX_BATCH_WRITE = 25
MAX_BATCH_GET = 100


@dataclass(frozen=True)
class TableInfo:
    """What DescribeTable says of a target table."""

    key_schema: KeySchema
    # Which table this is: its TableId (or, where an endpoint has none, its
    # creation time). A table deleted and created again has a new identity.
    identity: str


class Target(Protocol):
    """What dynasync needs from DynamoDB."""

    def describe(self, table: str) -> TableInfo | None:
        """The table's key schema and identity, or None when the table does not exist."""

    def create_table(self, table: str, key: KeySchema) -> None:
        """Create an on-demand table with this key schema and wait until it is ACTIVE."""

    def batch_write(self, table: str, requests: Sequence[WriteRequest]) -> list[WriteRequest]:
        """Send at most 25 requests; return the unprocessed ones."""

    def batch_get(self, table: str, keys: Sequence[Item]) -> tuple[list[Item], list[Item]]:
        """Fetch at most 100 keys; return (items found, unprocessed keys)."""

    def scan(self, table: str, start: Item | None) -> tuple[list[Item], Item | None]:
        """One page of items after `start`, and where the next page starts (None at the end)."""


def put(item: Item) -> WriteRequest:
    """A PutRequest for a whole item."""
    return {"PutRequest": {"Item": item}}


def delete(key: Item) -> WriteRequest:
    """A DeleteRequest for a key."""
    return {"DeleteRequest": {"Key": key}}
