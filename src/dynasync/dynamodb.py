"""The boto3 implementation of the Target interface: the only module that
imports boto3. Retries are dynasync's own (dynasync.retry), so botocore's are
turned off and every failure is classified here: retryable (and whether it was
throttling), invalid, or fatal.
"""

from __future__ import annotations

import contextlib
import time
import urllib.request
import zlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.config
import botocore.exceptions
import botocore.handlers
import botocore.httpsession

from dynasync.config import DynamoConfig
from dynasync.exceptions import (
    RetryableError,
    TableExistsError,
    TableMissingError,
    TargetError,
    ValidationError,
)
from dynasync.target import KeySchema, TableInfo, WriteRequest
from dynasync.values import Item
from dynasync.wire import WireClient

# Errors one item of a request can cause, which retrying it unchanged cannot
# fix: the writer narrows the request down to that item, a dead letter.
ITEM_CODES = frozenset({"ValidationException", "ItemCollectionSizeLimitExceededException"})
# DynamoDB's answers to a caller that goes faster than the table allows.
THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
RETRYABLE_CODES = THROTTLE_CODES | frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "LimitExceededException",
        "TransactionInProgressException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def _send_is_stubbed() -> bool:
    """Whether a handler answers botocore's requests in process (moto's stubber when enabled)."""
    return any(
        entry[0].startswith("before-send") and getattr(entry[1], "enabled", False)
        for entry in botocore.handlers.BUILTIN_HANDLERS
    )


def _check_crc32(response_dict: dict[str, Any], **_: Any) -> None:
    """botocore's `before-parse` hook: DynamoDB's CRC32 header must match the body.
    (botocore's own check only asks for a retry, and dynasync's retries are its own.)"""
    crc = response_dict.get("headers", {}).get("x-amz-crc32")
    body = response_dict.get("body", b"")
    if crc is not None and isinstance(body, bytes) and int(crc) != zlib.crc32(body):
        raise RetryableError("CRC32Mismatch", "the response body does not match its CRC32")


def classify(code: str, message: str, status: int, operation: str, table: str) -> TargetError:
    """The error for a DynamoDB failure: a missing table, one item's fault
    (narrowed to a dead letter), retryable (and whether it was throttling), or fatal."""
    if code == "ResourceNotFoundException":
        return TableMissingError(f"DynamoDB table {table!r} does not exist", table)
    if code == "ResourceInUseException" and operation == "create_table":
        return TableExistsError(message)
    if code in ITEM_CODES:
        return ValidationError(message if code == "ValidationException" else f"{code}: {message}")
    if code in RETRYABLE_CODES or status >= 500:
        return RetryableError(code, message, throttle=code in THROTTLE_CODES)
    return TargetError(f"DynamoDB {operation} on {table!r} failed: {code}: {message}")


class DynamoTarget:
    """Target over a boto3 DynamoDB client, with botocore's own retries off."""

    def __init__(self, cfg: DynamoConfig) -> None:
        session = boto3.session.Session()
        self._session = session
        self._client: Any = session.client(
            "dynamodb",
            region_name=cfg.region or session.region_name or "us-east-1",
            endpoint_url=cfg.endpoint_url,
            config=botocore.config.Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=cfg.connect_timeout,
                read_timeout=cfg.read_timeout,
                max_pool_connections=max(10, cfg.max_concurrency * 2),
                # DynamoDB validates every request itself; botocore's client-side
                # pass costs more CPU per item than the rest of a pass combined.
                parameter_validation=False,
            ),
        )
        self._client.meta.events.register("before-parse.dynamodb.*", _check_crc32)
        self._wire = self._wire_client(cfg)

    def _wire_client(self, cfg: DynamoConfig) -> WireClient | None:
        """BatchWriteItem's lean path (dynasync.wire); None behind an HTTP proxy,
        which only botocore's own transport knows how to use, and when something
        in this process answers botocore's requests itself (moto, a test stubber)."""
        url = str(self._client.meta.endpoint_url)
        host = urlsplit(url).hostname or ""
        if urllib.request.getproxies() and not urllib.request.proxy_bypass(host):
            return None
        if _send_is_stubbed():
            return None
        creds = self._session.get_credentials

        def frozen() -> Any:
            found = creds()
            return found.get_frozen_credentials() if found is not None else None

        return WireClient(url, str(self._client.meta.region_name), frozen, cfg.connect_timeout,
                          cfg.read_timeout, botocore.httpsession.get_cert_path(True))

    def _call(self, operation: str, table: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, operation)(**kwargs)
        except botocore.exceptions.ClientError as e:
            err = e.response.get("Error", {})
            code = str(err.get("Code", "Unknown"))
            message = str(err.get("Message", e))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            raise classify(code, message, status, operation, table) from e
        except botocore.exceptions.NoCredentialsError as e:
            raise TargetError("no AWS credentials found (set AWS_ACCESS_KEY_ID or a profile)") from e
        except (
            botocore.exceptions.ConnectionError,
            botocore.exceptions.HTTPClientError,
        ) as e:
            raise RetryableError(type(e).__name__, str(e)) from e

    def describe(self, table: str) -> TableInfo | None:
        """DescribeTable: the key schema, partition key first, and the table's identity."""
        try:
            desc = self._call("describe_table", table, TableName=table)["Table"]
        except TableMissingError:
            return None
        types = {a["AttributeName"]: a["AttributeType"] for a in desc["AttributeDefinitions"]}
        ordered = sorted(desc["KeySchema"], key=lambda k: 0 if k["KeyType"] == "HASH" else 1)
        key = tuple((k["AttributeName"], types[k["AttributeName"]]) for k in ordered)
        # DynamoDB Local has no TableId; its creation time tells a new table apart just as well.
        identity = desc.get("TableId") or str(desc.get("CreationDateTime", ""))
        return TableInfo(key, identity)

    def create_table(self, table: str, key: KeySchema) -> None:
        """CreateTable (on demand), then wait until the table is ACTIVE."""
        roles = ("HASH", "RANGE")
        # An earlier attempt may have got through before its connection dropped.
        with contextlib.suppress(TableExistsError):
            self._call(
                "create_table",
                table,
                TableName=table,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t in key],
                KeySchema=[{"AttributeName": n, "KeyType": roles[i]} for i, (n, _) in enumerate(key)],
            )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = self._call("describe_table", table, TableName=table)["Table"]["TableStatus"]
            if status == "ACTIVE":
                return
            time.sleep(1)
        raise TargetError(f"DynamoDB table {table!r} did not become ACTIVE within 5 minutes")

    def batch_write(self, table: str, requests: Sequence[WriteRequest]) -> list[WriteRequest]:
        """BatchWriteItem; the unprocessed requests."""
        if self._wire is None:
            response = self._call("batch_write_item", table, RequestItems={table: list(requests)})
            return list(response.get("UnprocessedItems", {}).get(table, []))
        sent = self._wire.batch_write(table, requests)
        if sent.status == 200:
            return self._wire.unprocessed(sent, table)
        code = sent.code or f"HTTP{sent.status}"
        raise classify(code, sent.message, sent.status, "batch_write_item", table)

    def batch_get(self, table: str, keys: Sequence[Item]) -> tuple[list[Item], list[Item]]:
        """Consistent BatchGetItem; (items found, unprocessed keys)."""
        response = self._call(
            "batch_get_item", table, RequestItems={table: {"Keys": list(keys), "ConsistentRead": True}}
        )
        items = list(response.get("Responses", {}).get(table, []))
        unprocessed = list(response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", []))
        return items, unprocessed

    def scan(self, table: str, start: Item | None) -> tuple[list[Item], Item | None]:
        """One consistent Scan page and the key it stopped at."""
        kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
        if start is not None:
            kwargs["ExclusiveStartKey"] = start
        page = self._call("scan", table, **kwargs)
        return list(page.get("Items", [])), page.get("LastEvaluatedKey")
