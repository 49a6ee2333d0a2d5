"""An in-memory Target with DynamoDB's write validations, and an in-memory S3, for unit tests."""

from __future__ import annotations

import copy
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from dynasync.exceptions import RetryableError, TableMissingError, TargetError, ValidationError
from dynasync.target import KeySchema, ObjectInfo, TableInfo, WriteRequest
from dynasync.values import Item, item_size
from dynasync.values import key_text as _ident


class FakeTarget:
    def __init__(self) -> None:
        self.tables: dict[str, tuple[KeySchema, dict[str, Item]]] = {}
        self.identities: dict[str, str] = {}
        self.requests = 0
        # Called before each batch_write with the requests; may raise or return
        # how many requests to leave unprocessed.
        self.fault: Callable[[Sequence[WriteRequest]], int] | None = None
        self.page_size: int | None = None  # items per Scan page; None: one page

    def describe(self, table: str) -> TableInfo | None:
        if table not in self.tables:
            return None
        return TableInfo(self.tables[table][0], self.identities[table])

    def create_table(self, table: str, key: KeySchema) -> None:
        self.tables[table] = (key, {})
        self.identities[table] = uuid.uuid4().hex

    def items(self, table: str) -> dict[str, Item]:
        return self.tables[table][1]

    def _key(self, table: str, item: Item) -> str:
        schema = self.tables[table][0]
        for name, kind in schema:
            if name not in item or kind not in item[name]:
                raise ValidationError("The provided key element does not match the schema")
        return _ident({name: item[name] for name, _ in schema})

    def batch_write(self, table: str, requests: Sequence[WriteRequest]) -> list[WriteRequest]:
        self.requests += 1
        if table not in self.tables:
            raise TableMissingError(f"DynamoDB table {table!r} does not exist", table)
        if len(requests) > 25:
            raise ValidationError("Member must have length less than or equal to 25")
        unprocessed = self.fault(requests) if self.fault else 0
        keys = []
        for r in requests:
            body = r.get("PutRequest", {}).get("Item") or r["DeleteRequest"]["Key"]
            keys.append(self._key(table, body))
            if "PutRequest" in r and item_size(body) > 400 * 1024:
                raise ValidationError("Item size has exceeded the maximum allowed size")
        if len(set(keys)) != len(keys):
            raise ValidationError("Provided list of item keys contains duplicates")
        done = requests[: len(requests) - unprocessed]
        store = self.tables[table][1]
        for r, k in zip(done, keys, strict=False):
            if "PutRequest" in r:
                store[k] = copy.deepcopy(r["PutRequest"]["Item"])
            else:
                store.pop(k, None)
        return list(requests[len(done) :])

    def batch_get(self, table: str, keys: Sequence[Item]) -> tuple[list[Item], list[Item]]:
        if table not in self.tables:
            raise TableMissingError(f"DynamoDB table {table!r} does not exist", table)
        store = self.tables[table][1]
        return [copy.deepcopy(store[_ident(k)]) for k in keys if _ident(k) in store], []

    def scan(self, table: str, start: Item | None) -> tuple[list[Item], Item | None]:
        if table not in self.tables:
            raise TableMissingError(f"DynamoDB table {table!r} does not exist", table)
        schema, store = self.tables[table]
        ordered = sorted(store.items(), key=lambda kv: repr(kv[0]))
        if start is not None:
            after = repr(_ident({name: start[name] for name, _ in schema}))
            ordered = [kv for kv in ordered if repr(kv[0]) > after]
        size = self.page_size or len(ordered) or 1
        page = [copy.deepcopy(v) for _, v in ordered[:size]]
        more = len(ordered) > size
        return page, ({name: page[-1][name] for name, _ in schema} if more else None)


def throttle_then_succeed(times: int) -> Callable[[Sequence[WriteRequest]], int]:
    calls = {"n": 0}

    def fault(requests: Sequence[WriteRequest]) -> int:
        calls["n"] += 1
        if calls["n"] <= times:
            raise RetryableError("ThrottlingException", "slow down", throttle=True)
        return 0

    return fault


class FakeStore:
    """An in-memory ObjectStore (S3), with a switch to make it fail like an outage."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, float]] = {}
        self.down = False  # every call raises a retryable error, as S3 out of reach does
        self.puts = 0
        self.keep_checksums = True  # HeadObject gives the SHA-256 back (S3 kept one)

    def _check(self) -> None:
        if self.down:
            raise RetryableError("ServiceUnavailable", "S3 is out of reach")

    def put(self, bucket: str, key: str, body: bytes, sha256: str) -> None:
        self._check()
        if hashlib.sha256(body).hexdigest() != sha256:
            raise TargetError(f"S3 put_object on s3://{bucket}/{key}: BadDigest")
        self.objects[(bucket, key)] = (bytes(body), time.time())
        self.puts += 1

    def put_file(self, bucket: str, key: str, path: Path, sha256: str, content_type: str) -> None:
        self.put(bucket, key, path.read_bytes(), sha256)

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        self._check()
        found = self.objects.get((bucket, key))
        if found is None:
            return None
        sha = hashlib.sha256(found[0]).hexdigest() if self.keep_checksums else None
        return ObjectInfo(key, len(found[0]), sha, found[1])

    def get(self, bucket: str, key: str) -> bytes | None:
        self._check()
        found = self.objects.get((bucket, key))
        return found[0] if found is not None else None

    def delete(self, bucket: str, keys: Sequence[str]) -> None:
        self._check()
        for k in keys:
            self.objects.pop((bucket, k), None)

    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        self._check()
        for (b, k), (body, when) in sorted(self.objects.items()):
            if b == bucket and k.startswith(prefix):
                yield ObjectInfo(k, len(body), None, when)

    def keys(self) -> set[str]:
        """Every object's key, in any bucket."""
        return {k for _, k in self.objects}
