"""The boto3 implementation of the Target interface: the only module that
imports boto3. Retries are dynasync's own (dynasync.retry), so botocore's are
turned off and every failure is classified here: retryable (and whether it was
throttling), invalid, or fatal.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

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


class DynamoTarget:
    """Target over a boto3 DynamoDB client, with botocore's own retries off."""

    def __init__(self, cfg: DynamoConfig) -> None:
        session = boto3.session.Session()
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

    def _call(self, operation: str, table: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, operation)(**kwargs)
        except botocore.exceptions.ClientError as e:
            err = e.response.get("Error", {})
            code = str(err.get("Code", "Unknown"))
            message = str(err.get("Message", e))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code == "ResourceNotFoundException":
                raise TableMissingError(f"DynamoDB table {table!r} does not exist", table) from e
            if code == "ResourceInUseException" and operation == "create_table":
                raise TableExistsError(message) from e
            if code in ITEM_CODES:
                detail = message if code == "ValidationException" else f"{code}: {message}"
                raise ValidationError(detail) from e
            if code in RETRYABLE_CODES or status >= 500:
                raise RetryableError(code, message, throttle=code in THROTTLE_CODES) from e
            raise TargetError(f"DynamoDB {operation} on {table!r} failed: {code}: {message}") from e
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
        response = self._call("batch_write_item", table, RequestItems={table: list(requests)})
        return list(response.get("UnprocessedItems", {}).get(table, []))

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
