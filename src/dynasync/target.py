"""The small interfaces between dynasync and AWS: DynamoDB (Target) and, for
the attributes of oversized items, S3 (ObjectStore).

dynasync.dynamodb and dynasync.s3 implement them with boto3; the unit tests
use in-memory fakes (tests/fakes.py). Items and keys travel in DynamoDB's low-level
attribute-value format. Implementations raise the errors of
dynasync.exceptions: RetryableError (marked as throttling or not),
ValidationError, TableMissingError, or TargetError for anything fatal.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
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


@dataclass(frozen=True)
class ObjectInfo:
    """What S3 says of an object without sending its body: its size, its
    SHA-256 (hex) when S3 kept one, and when it was last written (epoch seconds)."""

    key: str
    size: int
    sha256: str | None = None
    modified: float = 0.0


class ObjectStore(Protocol):
    """What dynasync needs from S3, for the attributes of oversized items."""

    def put(self, bucket: str, key: str, body: bytes, sha256: str) -> None:
        """Write an object; S3 checks it against its SHA-256 (hex)."""

    def put_file(self, bucket: str, key: str, path: Path, sha256: str, content_type: str) -> None:
        """Write an object from a file, streamed rather than held in memory; S3
        checks it against its SHA-256 (hex)."""

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's size and SHA-256, or None when there is no such object."""

    def get(self, bucket: str, key: str) -> bytes | None:
        """The object's body, or None when there is no such object."""

    def delete(self, bucket: str, keys: Sequence[str]) -> None:
        """Delete these objects (at most 1000); one already gone is no error."""

    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under a prefix (its size and when it was written; no SHA-256)."""
