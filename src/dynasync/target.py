"""The small interface between dynasync and DynamoDB.

dynasync.dynamodb implements it with boto3; the tests use an in-memory fake.
Items and keys travel in DynamoDB's low-level attribute-value format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from dynasync.exceptions import TargetError
from dynasync.mapping import Item

# Which source row a write stands for: (source table, k1, k2). Dead letters use it.
Ref = tuple[str, Any, Any]
WriteRequest = dict[str, Any]  # {"PutRequest": {"Item": ...}} or {"DeleteRequest": {"Key": ...}}
KeySchema = tuple[tuple[str, str], ...]  # ((name, "S"|"N"|"B"), ...) partition key first

MAX_BATCH_WRITE = 25
MAX_BATCH_GET = 100


class RetryableError(TargetError):
    """Throttling, a 5xx or a broken connection: the same request may succeed later."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class ValidationError(TargetError):
    """DynamoDB rejected the request as invalid; retrying it unchanged cannot help."""


class Target(Protocol):
    def key_schema(self, table: str) -> KeySchema | None:
        """The table's key schema, or None when the table does not exist."""

    def create_table(self, table: str, key: KeySchema) -> None: ...

    def batch_write(self, table: str, requests: Sequence[WriteRequest]) -> list[WriteRequest]:
        """Send at most 25 requests; return the unprocessed ones."""

    def batch_get(self, table: str, keys: Sequence[Item]) -> tuple[list[Item], list[Item]]:
        """Fetch at most 100 keys; return (items found, unprocessed keys)."""

    def scan(self, table: str, start: Item | None) -> tuple[list[Item], Item | None]:
        """One page of items after `start`, and where the next page starts (None at the end)."""


def put(item: Item) -> WriteRequest:
    return {"PutRequest": {"Item": item}}


def delete(key: Item) -> WriteRequest:
    return {"DeleteRequest": {"Key": key}}
